"""The spend ledger in PostgreSQL (`database_url`): the system of record, table `ledger`
(migration 0002), never trimmed by count (`ledger.max_per_day` is Redis's), rows older than
`ledger.retention_days` (default 400) deleted by the writer once an hour.

Writes stay off the request path. `add` appends to a bounded in-process queue and returns (no
await, no I/O). `run`, the background writer, takes the queue in batches of
`ledger.batch_records` every `ledger.flush_interval_s` (at once when a batch is full): COPY into
a per-connection staging table, then `INSERT ... SELECT ... ON CONFLICT (record_id) DO NOTHING`,
in one transaction. Each record gets its id (a UUIDv7, time-ordered) when it is first taken from
the queue and keeps it through every retry and the journal, so it is written exactly once.

PostgreSQL down (or the queue full): records go to the local journal (`ledger.journal_path`,
`journal.py`) and are replayed, exactly once, when it answers again. `stop` then `flush` at
shutdown leaves nothing in memory: what PostgreSQL did not take is in the journal. A record
PostgreSQL refuses as data (it should never happen: text is cleaned of what it cannot store) is
set aside in `<journal>.rejected`, logged, never dropped silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import tempfile
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.config.schema import LedgerConfig
from gateway.database.pool import Database
from gateway.errors import GatewayError
from gateway.ledger.journal import Entry, LedgerJournal
from gateway.ledger.store import FIELDS, PAGE, LedgerRecord, iso

__all__ = ["COLUMNS", "PostgresLedger", "default_journal_path", "record_id"]

log = logging.getLogger("gateway.ledger")
COLUMNS: tuple[str, ...] = ("record_id", "at", *FIELDS[1:])  # FIELDS[0] is `time`, stored as `at`
_LIST = ", ".join(COLUMNS)
_STAGE = "CREATE TEMP TABLE IF NOT EXISTS ledger_stage (LIKE ledger INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
_MOVE = f"INSERT INTO ledger ({_LIST}) SELECT {_LIST} FROM ledger_stage ON CONFLICT (record_id) DO NOTHING"
_PAGE = f"SELECT {_LIST} FROM ledger WHERE at >= $1 AND at < $2 {{}} ORDER BY at, record_id LIMIT {PAGE}"
_FIRST_PAGE, _NEXT_PAGE = _PAGE.format(""), _PAGE.format("AND (at, record_id) > ($3, $4)")
_EXPIRE_ROWS = 10_000  # rows per DELETE (short transactions, however much has expired)
_EXPIRE = f"DELETE FROM ledger WHERE record_id IN (SELECT record_id FROM ledger WHERE at < $1 LIMIT {_EXPIRE_ROWS})"
_EXPIRE_EVERY_S = 3600.0
_LOOK_EVERY_S = 5.0  # how often the writer looks for a journal (another process's, or an earlier run's)
_ACQUIRE_S = 10.0  # waiting for a pooled connection


def record_id() -> uuid.UUID:
    """A UUIDv7: milliseconds since the epoch, then 74 random bits (ids of one moment sort together,
    so the primary key's index grows at its end)."""
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10), "big")
    value = value & ~(0xF << 76) | 0x7 << 76  # version 7
    return uuid.UUID(int=value & ~(0x3 << 62) | 0x2 << 62)  # RFC 4122 variant


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
    """Errors that mean "PostgreSQL will never take this record": set it aside. (COPY raises a
    plain OverflowError for an integer beyond bigint; asyncpg's client-side DataError is a
    ValueError.)"""
    import asyncpg

    return asyncpg.DataError, OverflowError, ValueError


class PostgresLedger:
    def __init__(self, database: Database, config: LedgerConfig, journal: LedgerJournal, gauge: Any = None) -> None:
        self.database = database
        self.journal = journal
        self._config = config
        self._queue: deque[LedgerRecord] = deque()
        self._journaled = 0  # entries in the journal (as this process last saw it)
        self._up = True  # the last write reached PostgreSQL
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._flushing = asyncio.Lock()
        self._writes: set[asyncio.Task[bool]] = set()
        self._gauges = (gauge.labels("queue"), gauge.labels("journal")) if gauge is not None else None

    def add(self, record: LedgerRecord) -> None:
        if len(self._queue) >= self._config.max_queued:
            self._to_journal([(record_id(), record)])
            return
        self._queue.append(record)
        if len(self._queue) >= self._config.batch_records:
            self._wake.set()

    def backlog(self) -> tuple[int, int]:
        return len(self._queue), self._journaled

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        """Write batches until `stop`; replay the journal when PostgreSQL answers; expire old rows."""
        loop = asyncio.get_running_loop()
        self._journaled = self.journal.count()
        next_look = next_expiry = loop.time()
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._config.flush_interval_s)
            self._wake.clear()
            await self.flush()
            now = loop.time()
            if (self._journaled and self._up) or now >= next_look:
                next_look = now + _LOOK_EVERY_S
                await self.replay()
            if now >= next_expiry:
                next_expiry = now + _EXPIRE_EVERY_S
                await self._expire_logged()
        await self.flush()
        if self._journaled and self._up:
            await self.replay()

    async def flush(self) -> None:
        """Write everything queued now, in batches; what PostgreSQL does not take goes to the journal.
        One flush at a time (a second one waits, then writes what is left). A flush cancelled
        mid-write loses nothing: the batch's write finishes (or is journaled) on its own."""
        async with self._flushing:
            while self._queue:
                entries = [(record_id(), r) for r in self._take(self._config.batch_records)]
                task = asyncio.get_running_loop().create_task(self._write(entries))
                self._writes.add(task)
                task.add_done_callback(self._writes.discard)
                if not await asyncio.shield(task):  # down: the rest straight to the journal, no waiting per batch
                    self._to_journal([(record_id(), r) for r in self._take(len(self._queue))])
                    break
            if self._writes:  # (a cancelled flush's write, still running)
                await asyncio.gather(*self._writes)
        self._show()

    def _take(self, n: int) -> list[LedgerRecord]:
        return [self._queue.popleft() for _ in range(min(n, len(self._queue)))]

    async def _write(self, entries: list[Entry]) -> bool:
        """Write a batch, or journal it; False when it went to the journal. Never raises: the
        records are the money's record, and the writer must outlive any one batch."""
        try:
            await self._store(entries)
        except Exception as exc:
            self._up = False
            self._to_journal(entries)
            if not isinstance(exc, _unavailable()):  # not an outage: a bug, said loudly (the records are kept)
                log.exception("ledger: %d record(s) not written, journaled to %s", len(entries), self.journal.path)
                return False
            log.warning("ledger: PostgreSQL unavailable (%r): %d record(s) journaled to %s", exc, len(entries),
                        self.journal.path)
            return False
        self._up = True
        return True

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
        rows = [_row(e) for e in entries]
        async with pool.acquire(timeout=_ACQUIRE_S) as conn, conn.transaction():
            await conn.execute(_STAGE)
            await conn.copy_records_to_table("ledger_stage", records=rows, columns=COLUMNS)
            await conn.execute(_MOVE)

    def _to_journal(self, entries: list[Entry]) -> None:
        if not entries:
            return
        try:
            self.journal.append(entries)
        except OSError as exc:  # nowhere to put them: keep them in memory, past the bound
            log.error("ledger: journal %s not writable (%r): %d record(s) kept in memory", self.journal.path, exc,
                      len(entries))
            self._queue.extendleft(reversed([r for _, r in entries]))
            return
        self._journaled += len(entries)

    def _reject(self, entry: Entry, exc: BaseException) -> None:
        rejected = LedgerJournal(f"{self.journal.path}.rejected")
        rejected.append([entry])
        log.error("ledger: PostgreSQL refused the record of request %s (%r); kept in %s", entry[1].request_id, exc,
                  rejected.path)

    async def replay(self) -> int:
        """Write the journal into PostgreSQL; how many entries it held (0 while PostgreSQL is down)."""
        try:
            written = await self.journal.replay(self._store, self._config.batch_records)
        except Exception as exc:  # kept for the next replay, whatever it was
            self._up = False
            if isinstance(exc, _unavailable()):
                log.debug("ledger journal replay deferred: %r", exc)
            else:
                log.exception("ledger journal replay failed (kept for the next one)")
            return 0
        self._up = True
        if written:
            log.warning("ledger: %d journaled record(s) written to PostgreSQL", written)
        self._journaled = self.journal.count()
        self._show()
        return written

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

    async def _expire_logged(self) -> None:
        try:
            deleted = await self.expire()
        except Exception as exc:  # the writer outlives it: tried again in an hour
            if isinstance(exc, _unavailable()):
                log.debug("ledger retention deferred: %r", exc)
            else:
                log.exception("ledger retention failed")
            return
        if deleted:
            log.info("ledger: %d record(s) older than %d days deleted", deleted, self._config.kept_days(True))

    def _show(self) -> None:
        if self._gauges is not None:
            self._gauges[0].set(len(self._queue))
            self._gauges[1].set(self._journaled)

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
