"""A local append-only journal of settlements that could not reach Redis, so no spend is lost
during an outage. One JSON object per line, flushed after each line (not fsynced: a machine
crash may lose the last lines, a process crash does not).

`replay` moves the journal aside (so new settlements start a fresh file), applies every entry,
and deletes the moved file only once all its entries are applied; a failure leaves it for the
next replay. Applying is idempotent per hold id (see `RedisBudgets`), so an entry applied twice
(replay interrupted, or a settle that reached Redis although the client saw an error) counts
once. Appends and the move take an exclusive `flock`, so several processes may share one path.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from gateway.access.budgets import Hold
from gateway.runtime.journal_file import JournalFile

__all__ = ["Settlement", "SpendJournal"]

log = logging.getLogger("gateway.budgets")


@dataclass(frozen=True, slots=True)
class Settlement:
    hold: Hold
    actual: int  # pico-USD
    at: datetime  # when the money was spent: decides its budget period

    def to_line(self) -> bytes:
        entry = {"id": self.hold.id, "hold": asdict(self.hold), "actual": self.actual, "at": self.at.isoformat()}
        return json.dumps(entry, separators=(",", ":")).encode() + b"\n"

    @classmethod
    def from_line(cls, line: bytes) -> Settlement:
        entry = json.loads(line)
        return cls(Hold(**entry["hold"]), int(entry["actual"]), datetime.fromisoformat(entry["at"]))


class SpendJournal:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.file = JournalFile(path)
        self.path = self.file.path

    def append(self, settlement: Settlement) -> None:
        self.file.append(settlement.to_line())

    def pending(self) -> list[Settlement]:
        """Every entry not yet replayed (journal and moved-aside files)."""
        return [s for f in self.file.files() for s in self._read(f)]

    def _read(self, path: Path) -> list[Settlement]:
        entries = []
        try:
            lines = path.read_bytes().splitlines()
        except FileNotFoundError:  # replayed and deleted by another process meanwhile
            return []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                entries.append(Settlement.from_line(line))
            except (ValueError, KeyError, TypeError) as exc:  # a torn last line after a crash
                log.error("spend journal %s line %d unreadable, skipped: %r", path, number, exc)
        return entries

    async def replay(self, apply: Callable[[Settlement], Awaitable[object]]) -> int:
        """Apply every journaled settlement; how many changed anything (`apply` returning False
        means "already applied"). Raises whatever `apply` raises (e.g. Redis still down),
        keeping what is not yet applied."""
        self.file.move_aside()
        applied = 0
        for path in self.file.moved():
            for settlement in self._read(path):
                if await apply(settlement) is not False:
                    applied += 1
            path.unlink(missing_ok=True)
        if applied:
            log.warning("spend journal %s: replayed %d settlements", self.path.name, applied)
        return applied
