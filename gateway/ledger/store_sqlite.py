"""The spend ledger in the embedded SQLite store (`gateway.database.sqlite`, table `ledger`): kept
`ledger.retention_days` (default 400; older rows deleted by the writer once an hour), never trimmed
by count, shared by the processes using the file.

Writes stay off the request path, as with PostgreSQL (`store_pg`): `add` appends to a bounded
queue and returns (no await, no I/O); `run` writes the queue in batches of `ledger.batch_records`
every `ledger.flush_interval_s` (at once when a batch is full), one transaction each, on the
store's thread. A record gets its id (a UUIDv7) when first taken from the queue and keeps it
through every retry and the journal, so `INSERT OR IGNORE` writes it exactly once.

The file unavailable (or the queue full): records go to the local journal (`ledger.journal_path`,
by default next to the SQLite file; `journal.py`) and are written, exactly once, when it answers
again. `stop` then `flush` at shutdown leaves nothing in memory. A record SQLite cannot store (an
integer beyond 64 bits) is set aside in `<journal>.rejected`, logged, never dropped silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sqlite3
from collections import deque
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.config.schema import LedgerConfig
from gateway.database.sqlite import Sqlite
from gateway.errors import ServiceUnavailable
from gateway.ledger.journal import Entry, LedgerJournal
from gateway.ledger.store import FIELDS, PAGE, LedgerRecord, iso
from gateway.ledger.store_pg import COLUMNS, record_id

__all__ = ["SqliteLedger"]

log = logging.getLogger("gateway.ledger")
_INSERT = f"INSERT OR IGNORE INTO ledger ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
_PAGE = f"SELECT {', '.join(COLUMNS)} FROM ledger WHERE at >= ? AND at < ? {{}} ORDER BY at, record_id LIMIT {PAGE}"
_FIRST_PAGE, _NEXT_PAGE = _PAGE.format(""), _PAGE.format("AND (at, record_id) > (?, ?)")
_EXPIRE_ROWS = 10_000  # rows per DELETE (short transactions, however much has expired)
_EXPIRE = f"DELETE FROM ledger WHERE record_id IN (SELECT record_id FROM ledger WHERE at < ? LIMIT {_EXPIRE_ROWS})"
_EXPIRE_EVERY_S = 3600.0
_LOOK_EVERY_S = 5.0  # how often the writer looks for a journal (another process's, or an earlier run's)


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


def _expire(cutoff: str, conn: sqlite3.Connection) -> int:
    return int(conn.execute(_EXPIRE, (cutoff,)).rowcount)


class SqliteLedger:
    def __init__(self, store: Sqlite, config: LedgerConfig, journal: LedgerJournal, gauge: Any = None) -> None:
        self.store = store
        self.journal = journal
        self._config = config
        self._queue: deque[LedgerRecord] = deque()
        self._journaled = 0  # entries in the journal (as this process last saw it)
        self._up = True  # the last write reached the file
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
        """Write batches until `stop`; replay the journal when the file answers; expire old rows."""
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
        """Write everything queued now, in batches; what the file does not take goes to the journal.
        A flush cancelled mid-write loses nothing: the batch's write finishes (or is journaled)."""
        async with self._flushing:
            while self._queue:
                entries = [(record_id(), r) for r in self._take(self._config.batch_records)]
                task = asyncio.get_running_loop().create_task(self._write(entries))
                self._writes.add(task)
                task.add_done_callback(self._writes.discard)
                if not await asyncio.shield(task):  # unavailable: the rest straight to the journal
                    self._to_journal([(record_id(), r) for r in self._take(len(self._queue))])
                    break
            if self._writes:
                await asyncio.gather(*self._writes)
        self._show()

    def _take(self, n: int) -> list[LedgerRecord]:
        return [self._queue.popleft() for _ in range(min(n, len(self._queue)))]

    async def _write(self, entries: list[Entry]) -> bool:
        """Write a batch, or journal it; False when it went to the journal. Never raises."""
        try:
            await self._insert_entries(entries)
        except Exception as exc:
            self._up = False
            self._to_journal(entries)
            if not isinstance(exc, ServiceUnavailable):  # not an outage: a bug, said loudly (the records are kept)
                log.exception("ledger: %d record(s) not written, journaled to %s", len(entries), self.journal.path)
                return False
            log.warning("ledger: %s: %d record(s) journaled to %s", exc.message, len(entries), self.journal.path)
            return False
        self._up = True
        return True

    async def _insert_entries(self, entries: list[Entry]) -> None:
        """Insert `entries` (each at most once); ServiceUnavailable when the file cannot take them."""
        try:
            await self.store.write(functools.partial(_insert, [_row(e) for e in entries]))
        except OverflowError:  # an integer beyond SQLite's 64 bits: find it, write the others
            for entry in entries:
                try:
                    await self.store.write(functools.partial(_insert, [_row(entry)]))
                except OverflowError as exc:
                    rejected = LedgerJournal(f"{self.journal.path}.rejected")
                    rejected.append([entry])
                    log.error("ledger: SQLite refused the record of request %s (%r); kept in %s",
                              entry[1].request_id, exc, rejected.path)

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

    async def replay(self) -> int:
        """Write the journal into the file; how many entries it held (0 while it is unavailable)."""
        try:
            written = await self.journal.replay(self._insert_entries, self._config.batch_records)
        except Exception as exc:  # kept for the next replay, whatever it was
            self._up = False
            if not isinstance(exc, ServiceUnavailable):
                log.exception("ledger journal replay failed (kept for the next one)")
            return 0
        self._up = True
        if written:
            log.warning("ledger: %d journaled record(s) written to SQLite", written)
        self._journaled = self.journal.count()
        self._show()
        return written

    async def expire(self, now: datetime | None = None) -> int:
        """Delete the rows older than the retention; how many."""
        cutoff = iso((now or datetime.now(UTC)) - timedelta(days=self._config.kept_days(True)))
        deleted = 0
        while True:
            count = await self.store.write(functools.partial(_expire, cutoff))
            deleted += count
            if count < _EXPIRE_ROWS:
                return deleted

    async def _expire_logged(self) -> None:
        try:
            deleted = await self.expire()
        except ServiceUnavailable as exc:
            log.debug("ledger retention deferred: %s", exc.message)
            return
        if deleted:
            log.info("ledger: %d record(s) older than %d days deleted", deleted, self._config.kept_days(True))

    def _show(self) -> None:
        if self._gauges is not None:
            self._gauges[0].set(len(self._queue))
            self._gauges[1].set(self._journaled)

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
