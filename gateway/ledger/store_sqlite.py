"""The spend ledger in the embedded SQLite store (`gateway.database.sqlite`, table `ledger`): kept
`ledger.retention_days` (default 400; older rows deleted by the writer once an hour), never trimmed
by count, shared by the processes using the file.

Writes stay off the request path (`writer.py`, shared with PostgreSQL): one transaction per batch,
on the store's thread; a record's id (a UUIDv7, kept through retries and the journal) makes
`INSERT OR IGNORE` write it exactly once.

The file unavailable (or the queue full): records go to the local journal (`ledger.journal_path`,
by default next to the SQLite file; `journal.py`) and are written, exactly once, when it answers
again. `stop` then `flush` at shutdown leaves nothing in memory. A record SQLite cannot store (an
integer beyond 64 bits) is set aside in `<journal>.rejected`, logged, never dropped silently.
"""

from __future__ import annotations

import functools
import logging
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.config.schema import LedgerConfig
from gateway.database.sqlite import Sqlite
from gateway.errors import ServiceUnavailable
from gateway.ledger.journal import Entry, LedgerJournal
from gateway.ledger.store import FIELDS, PAGE, LedgerRecord, iso
from gateway.ledger.store_pg import COLUMNS
from gateway.ledger.writer import LedgerWriter

__all__ = ["SqliteLedger"]

log = logging.getLogger("gateway.ledger")
_INSERT = f"INSERT OR IGNORE INTO ledger ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
_PAGE = f"SELECT {', '.join(COLUMNS)} FROM ledger WHERE at >= ? AND at < ? {{}} ORDER BY at, record_id LIMIT {PAGE}"
_FIRST_PAGE, _NEXT_PAGE = _PAGE.format(""), _PAGE.format("AND (at, record_id) > (?, ?)")
_EXPIRE_ROWS = 10_000  # rows per DELETE (short transactions, however much has expired)
_SUMS = "SELECT key_id, team, sum(cost_pico) AS pico FROM ledger WHERE at >= ? AND at < ? GROUP BY key_id, team"
_EXPIRE = f"DELETE FROM ledger WHERE record_id IN (SELECT record_id FROM ledger WHERE at < ? LIMIT {_EXPIRE_ROWS})"


def _text(value: str) -> str:
    """What SQLite's UTF-8 text can store: no lone surrogate."""
    return value if value.isascii() else value.encode("utf-8", "replace").decode()


def _row(entry: Entry) -> tuple[Any, ...]:
    rid, record = entry
    values = [getattr(record, f) for f in FIELDS[1:]]
    return str(rid), iso(datetime.fromisoformat(record.time)), *[_text(v) if isinstance(v, str) else v
                                                                 for v in values]


def _insert(rows: list[tuple[Any, ...]], conn: sqlite3.Connection) -> None:
    conn.executemany(_INSERT, rows)


def _page(start: str, end: str, after: tuple[str, ...], conn: sqlite3.Connection) -> list[sqlite3.Row]:
    return conn.execute(_NEXT_PAGE if after else _FIRST_PAGE, (start, end, *after)).fetchall()


def _sums(start: str, end: str, conn: sqlite3.Connection) -> list[sqlite3.Row]:
    return conn.execute(_SUMS, (start, end)).fetchall()


def _expire(cutoff: str, conn: sqlite3.Connection) -> int:
    return int(conn.execute(_EXPIRE, (cutoff,)).rowcount)


class SqliteLedger(LedgerWriter):
    where = "SQLite"

    def __init__(self, store: Sqlite, config: LedgerConfig, journal: LedgerJournal, gauge: Any = None) -> None:
        super().__init__(config, journal, gauge)
        self.store = store

    def _outage(self, exc: BaseException) -> bool:
        return isinstance(exc, ServiceUnavailable)

    async def _store(self, entries: list[Entry]) -> None:
        """Insert `entries` (each at most once); ServiceUnavailable when the file cannot take them."""
        try:
            await self.store.write(functools.partial(_insert, [_row(e) for e in entries]))
        except OverflowError:  # an integer beyond SQLite's 64 bits: find it, write the others
            for entry in entries:
                try:
                    await self.store.write(functools.partial(_insert, [_row(entry)]))
                except OverflowError as exc:
                    self._reject(entry, exc)

    async def expire(self, now: datetime | None = None) -> int:
        """Delete the rows older than the retention; how many."""
        cutoff = iso((now or datetime.now(UTC)) - timedelta(days=self._config.kept_days(True)))
        deleted = 0
        while True:
            count = await self.store.write(functools.partial(_expire, cutoff))
            deleted += count
            if count < _EXPIRE_ROWS:
                return deleted

    async def pages(self, start: datetime, end: datetime) -> AsyncIterator[list[LedgerRecord]]:
        """Records with start <= time < end, oldest first, in pages of at most PAGE (keyset)."""
        after: tuple[str, ...] = ()
        while True:
            rows = await self.store.read(functools.partial(_page, iso(start), iso(end), after))
            if rows:
                yield [LedgerRecord(row["at"], *tuple(row)[2:]) for row in rows]
            if len(rows) < PAGE:
                return
            after = (rows[-1]["at"], rows[-1]["record_id"])

    async def sums(self, start: datetime, end: datetime) -> dict[tuple[str, str], int]:
        """Pico-USD per (key_id, team) of the records with start <= time < end, by one SQL sum (the
        spend forecast's window, `gateway/access/forecast.py`)."""
        rows = await self.store.read(functools.partial(_sums, iso(start), iso(end)))
        return {(row["key_id"], row["team"]): int(row["pico"]) for row in rows}
