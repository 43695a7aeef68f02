"""A local append-only journal of ledger records that could not be written to PostgreSQL yet
(it was down, or the writer's queue was full), replayed when it answers again. The approach of
`gateway/access/journal.py` (the budgets' journal): one JSON object per line (`{"id": the
record's id, "r": the record}`), flushed after each write (not fsynced: a machine crash may lose
the last lines, a process crash does not); appends and the move aside take an exclusive `flock`,
so several processes may share one path.

`replay` moves the journal aside (new records start a fresh file), writes every entry, and
deletes the moved file only once all its entries are written; a failure leaves it for the next
replay. Writing is idempotent by record id (`ON CONFLICT (record_id) DO NOTHING`), so an entry
written twice (a replay cut off, or a batch that reached PostgreSQL although the writer saw an
error) counts once.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import orjson

from gateway.ledger.store import LedgerRecord
from gateway.runtime.journal_file import JournalFile

__all__ = ["Entry", "LedgerJournal"]

log = logging.getLogger("gateway.ledger")
Entry = tuple[uuid.UUID, LedgerRecord]  # a record and the id it is written under, for ever


def _line(entry: Entry) -> bytes:
    rid, record = entry
    try:
        return orjson.dumps({"id": str(rid), "r": record}) + b"\n"
    except TypeError:  # a lone surrogate in a text field: UTF-8 (JSON) cannot hold it
        data = {k: v.encode("utf-8", "replace").decode() if isinstance(v, str) else v
                for k, v in record.to_dict().items()}
        return orjson.dumps({"id": str(rid), "r": data}) + b"\n"


class LedgerJournal:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.file = JournalFile(path)
        self.path = self.file.path

    def append(self, entries: list[Entry]) -> None:
        """Write `entries` at the journal's end (one write, under the lock)."""
        if entries:
            self.file.append(b"".join(map(_line, entries)))

    def has_entries(self) -> bool:
        return bool(self.file.moved()) or (self.path.exists() and self.path.stat().st_size > 0)

    def count(self) -> int:
        """Entries not yet replayed (journal and moved-aside files)."""
        total = 0
        for path in self.file.files():
            try:
                with open(path, "rb") as f:
                    total += sum(1 for line in f if line.strip())
            except FileNotFoundError:  # replayed and deleted by another process meanwhile
                continue
        return total

    def pending(self) -> list[Entry]:
        """Every entry not yet replayed, oldest file first."""
        return [e for path in self.file.files() for e in self._read(path)]

    def _read(self, path: Path) -> Iterator[Entry]:
        """The file's entries, line by line (a long outage's journal is never read whole)."""
        try:
            f = open(path, "rb")  # noqa: SIM115 (closed below, after the last line)
        except FileNotFoundError:  # replayed and deleted by another process meanwhile
            return
        with f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    entry = orjson.loads(line)
                    yield uuid.UUID(entry["id"]), LedgerRecord.from_dict(entry["r"])
                except (ValueError, KeyError, TypeError) as exc:  # a torn last line after a crash
                    log.error("ledger journal %s line %d unreadable, skipped: %r", path, number, exc)

    async def replay(self, write: Callable[[list[Entry]], Awaitable[None]], batch: int) -> int:
        """Write every journaled entry, `batch` at a time; how many were written (including any
        already in PostgreSQL). Raises whatever `write` raises, keeping what is not yet written."""
        self.file.move_aside()
        written = 0
        for path in self.file.moved():
            entries: list[Entry] = []
            for entry in self._read(path):
                entries.append(entry)
                if len(entries) >= batch:
                    await write(entries)
                    written, entries = written + len(entries), []
            if entries:
                await write(entries)
                written += len(entries)
            path.unlink(missing_ok=True)
        return written
