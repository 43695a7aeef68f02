"""The file under a local journal (the budgets' settlements, the ledger's records): lines appended
under an exclusive `flock` (several processes may share one path), flushed, not fsynced (a
machine crash may lose the last lines, a process crash does not); a replay first moves the file
aside (`<name>.<uuid>.replay`) so new lines start a fresh file, and deletes each moved file only
once all its entries are applied."""

from __future__ import annotations

import fcntl
import os
import uuid
from pathlib import Path

__all__ = ["JournalFile"]


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


class JournalFile:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def append(self, lines: bytes) -> None:
        """Write `lines` at the end (one write, under the lock)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            with open(self.path, "ab") as f:
                fcntl.flock(f, fcntl.LOCK_EX)
                if not _same_file(f.fileno(), self.path):
                    continue  # moved aside by a replay meanwhile: write to the new file
                f.write(lines)
                f.flush()
                return

    def move_aside(self) -> None:
        if not self.path.exists():
            return
        with open(self.path, "ab") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            if _same_file(f.fileno(), self.path) and os.fstat(f.fileno()).st_size > 0:
                os.rename(self.path, self.path.with_name(f"{self.path.name}.{uuid.uuid4().hex}.replay"))

    def moved(self) -> list[Path]:
        """The files moved aside and not yet replayed, oldest first."""
        found = []
        for path in self.path.parent.glob(f"{self.path.name}.*.replay"):
            try:
                found.append((path.stat().st_mtime, path))
            except FileNotFoundError:  # replayed and deleted by another process meanwhile
                continue
        return [path for _, path in sorted(found)]

    def files(self) -> list[Path]:
        """Every file holding entries not yet replayed, oldest first."""
        return [*self.moved(), *([self.path] if self.path.exists() else [])]
