"""The spend ledger in PostgreSQL (`database_url`): the system of record, table `ledger`
(migration 0002), never trimmed by count (`ledger.max_per_day` is Redis's), rows older than
`ledger.retention_days` (default 400) deleted by the writer once an hour.

Writes stay off the request path (`writer.py`, shared with SQLite): each batch is one statement,
`INSERT ... SELECT * FROM unnest(<one array per column>) ON CONFLICT (record_id) DO NOTHING`, so
a record is written exactly once, in one round trip per batch. (A COPY into a staging table, the
first version, took five round trips per batch: on this path the client's CPU goes mostly to
round trips, not rows.)

PostgreSQL down (or the queue full): records go to the local journal (`ledger.journal_path`,
`journal.py`) and are replayed, exactly once, when it answers again. `stop` then `flush` at
shutdown leaves nothing in memory: what PostgreSQL did not take is in the journal. A record
PostgreSQL refuses as data (it should never happen: text is cleaned of what it cannot store) is
set aside in `<journal>.rejected`, logged, never dropped silently.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import tempfile
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any

from gateway.config.schema import LedgerConfig
from gateway.database.pool import Database
from gateway.errors import GatewayError, ServiceUnavailable
from gateway.ledger.journal import Entry, LedgerJournal
from gateway.ledger.store import FIELDS, PAGE, LedgerRecord, iso
from gateway.ledger.writer import LedgerWriter

__all__ = ["COLUMNS", "PostgresLedger", "default_journal_path"]

log = logging.getLogger("gateway.ledger")
COLUMNS: tuple[str, ...] = ("record_id", "at", *FIELDS[1:])  # FIELDS[0] is `time`, stored as `at`
_LIST = ", ".join(COLUMNS)
_SQL_TYPES = MappingProxyType({"str": "text", "int": "bigint", "float": "double precision"})
_TYPES = ("uuid", "timestamptz", *(_SQL_TYPES[str(f.type)] for f in dataclasses.fields(LedgerRecord)[1:]))
_INSERT = (f"INSERT INTO ledger ({_LIST}) SELECT * FROM unnest("
           + ", ".join(f"${i}::{t}[]" for i, t in enumerate(_TYPES, 1)) + ") ON CONFLICT (record_id) DO NOTHING")
_PAGE = f"SELECT {_LIST} FROM ledger WHERE at >= $1 AND at < $2 {{}} ORDER BY at, record_id LIMIT {PAGE}"
_FIRST_PAGE, _NEXT_PAGE = _PAGE.format(""), _PAGE.format("AND (at, record_id) > ($3, $4)")
_EXPIRE_ROWS = 10_000  # rows per DELETE (short transactions, however much has expired)
_EXPIRE = f"DELETE FROM ledger WHERE record_id IN (SELECT record_id FROM ledger WHERE at < $1 LIMIT {_EXPIRE_ROWS})"
_ACQUIRE_S = 10.0  # waiting for a pooled connection
_SUMS = "SELECT key_id, team, sum(cost_pico) AS pico FROM ledger WHERE at >= $1 AND at < $2 GROUP BY key_id, team"


def default_journal_path(url: str, schema: str) -> str:
    """In the temp dir, one per database and schema (two gateways on one machine never replay into
    each other's database); processes of one gateway share it."""
    digest = hashlib.sha256(f"{url}\0{schema}".encode()).hexdigest()[:12]
    return os.path.join(tempfile.gettempdir(), f"gateway-ledger-journal-{digest}.jsonl")


def _text(value: str) -> str:
    """What PostgreSQL's text can store: no NUL, no lone surrogate."""
    if value.isascii() and "\x00" not in value:
        return value
    return value.encode("utf-8", "replace").decode().replace("\x00", "\ufffd")


def _row(entry: Entry) -> tuple[Any, ...]:
    rid, record = entry
    values = [getattr(record, f) for f in FIELDS[1:]]
    return rid, datetime.fromisoformat(record.time), *[_text(v) if isinstance(v, str) else v for v in values]


def _record(row: Any) -> LedgerRecord:
    values = tuple(row)
    return LedgerRecord(iso(values[1]), *values[2:])


def _unavailable() -> tuple[type[BaseException], ...]:
    """Errors that mean "PostgreSQL cannot take it now": journal and retry."""
    import asyncpg

    return OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, GatewayError


def _refused() -> tuple[type[BaseException], ...]:
    """Errors that mean "PostgreSQL will never take this record": set it aside. (An integer beyond
    bigint is asyncpg's client-side DataError, a ValueError; OverflowError for good measure.)"""
    import asyncpg

    return asyncpg.DataError, OverflowError, ValueError


class PostgresLedger(LedgerWriter):
    where = "PostgreSQL"

    def __init__(self, database: Database, config: LedgerConfig, journal: LedgerJournal, gauge: Any = None) -> None:
        super().__init__(config, journal, gauge)
        self.database = database

    def _outage(self, exc: BaseException) -> bool:
        return isinstance(exc, _unavailable())

    async def _store(self, entries: list[Entry]) -> None:
        """Insert `entries` (each at most once); raises when PostgreSQL cannot take them now."""
        pool = await self.database.pool()  # (outside: a bad URL is no bad record)
        try:
            await self._insert(pool, entries)
        except _refused():
            for entry in entries:  # find the record(s) PostgreSQL refuses; the others go in
                try:
                    await self._insert(pool, [entry])
                except _refused() as exc:
                    self._reject(entry, exc)

    async def _insert(self, pool: Any, entries: list[Entry]) -> None:
        if not entries:
            return
        columns = [list(c) for c in zip(*(_row(e) for e in entries), strict=True)]
        async with pool.acquire(timeout=_ACQUIRE_S) as conn:
            await conn.execute(_INSERT, *columns)

    async def expire(self, now: datetime | None = None) -> int:
        """Delete the rows older than the retention; how many."""
        cutoff = (now or datetime.now(UTC)) - timedelta(days=self._config.kept_days(True))
        pool = await self.database.pool()
        deleted = 0
        while True:
            async with pool.acquire(timeout=_ACQUIRE_S) as conn:
                status = await conn.execute(_EXPIRE, cutoff)
            count = int(status.rsplit(" ", 1)[-1])
            deleted += count
            if count < _EXPIRE_ROWS:
                return deleted

    async def pages(self, start: datetime, end: datetime) -> AsyncIterator[list[LedgerRecord]]:
        """Records with start <= time < end, oldest first, in pages of at most PAGE (keyset: each
        page is one indexed range scan, however deep)."""
        pool = await self.database.pool()
        after: tuple[Any, ...] = ()
        while True:
            async with pool.acquire(timeout=_ACQUIRE_S) as conn:
                rows = await conn.fetch(_NEXT_PAGE if after else _FIRST_PAGE, start, end, *after)
            if rows:
                yield [_record(row) for row in rows]
            if len(rows) < PAGE:
                return
            after = (rows[-1]["at"], rows[-1]["record_id"])

    async def sums(self, start: datetime, end: datetime) -> dict[tuple[str, str], int]:
        """Pico-USD per (key_id, team) of the records with start <= time < end, by one SQL sum (the
        spend forecast's window, `gateway/access/forecast.py`); ServiceUnavailable when PostgreSQL
        does not answer."""
        try:
            pool = await self.database.pool()
            async with pool.acquire(timeout=_ACQUIRE_S) as conn:
                rows = await conn.fetch(_SUMS, start, end)
        except _unavailable() as exc:
            if isinstance(exc, GatewayError):
                raise
            raise ServiceUnavailable(f"the ledger (PostgreSQL) is unavailable: {exc!r}") from exc
        return {(row["key_id"], row["team"]): int(row["pico"]) for row in rows}
