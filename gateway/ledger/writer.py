"""What the durable ledgers (PostgreSQL `store_pg`, SQLite `store_sqlite`) share: the writer that
keeps writes off the request path.

`add` appends to a bounded in-process queue and returns (no await, no I/O). `run`, the background
writer, takes the queue in batches of `ledger.batch_records` every `ledger.flush_interval_s` (at
once when a batch is full) and hands each to the store (`_store`). Each record gets its id (a
UUIDv7, time-ordered) when it is first taken from the queue and keeps it through every retry and
the journal, so the store writes it exactly once. The store unavailable (or the queue full):
records go to the local journal (`journal.py`) and are replayed, exactly once, when it answers
again. `stop` then `flush` at shutdown leaves nothing in memory. Rows older than
`ledger.retention_days` are deleted once an hour (`expire`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from abc import ABC, abstractmethod
from collections import deque
from datetime import datetime
from typing import Any

from gateway.config.schema import LedgerConfig
from gateway.ledger.journal import Entry, LedgerJournal
from gateway.ledger.store import LedgerRecord

__all__ = ["LedgerWriter", "record_id"]

log = logging.getLogger("gateway.ledger")
_EXPIRE_EVERY_S = 3600.0
_LOOK_EVERY_S = 5.0  # how often the writer looks for a journal (another process's, or an earlier run's)


def record_id() -> uuid.UUID:
    """A UUIDv7: milliseconds since the epoch, then 74 random bits (ids of one moment sort together,
    so the primary key's index grows at its end)."""
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10), "big")
    value = value & ~(0xF << 76) | 0x7 << 76  # version 7
    return uuid.UUID(int=value & ~(0x3 << 62) | 0x2 << 62)  # RFC 4122 variant


class LedgerWriter(ABC):
    """A store implements `_store` (write entries, each at most once; raise when it cannot take
    them now), `_outage` (whether an error means "unavailable, retry later"), `expire` and
    `pages`; `where` names it in logs."""

    where = "the store"

    def __init__(self, config: LedgerConfig, journal: LedgerJournal, gauge: Any = None) -> None:
        self.journal = journal
        self._config = config
        self._queue: deque[LedgerRecord] = deque()
        self._journaled = 0  # entries in the journal (as this process last saw it)
        self._up = True  # the last write reached the store
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._flushing = asyncio.Lock()
        self._writes: set[asyncio.Task[bool]] = set()
        self._gauges = (gauge.labels("queue"), gauge.labels("journal")) if gauge is not None else None

    @abstractmethod
    async def _store(self, entries: list[Entry]) -> None: ...

    @abstractmethod
    def _outage(self, exc: BaseException) -> bool: ...

    @abstractmethod
    async def expire(self, now: datetime | None = None) -> int:
        """Delete the rows older than the retention; how many."""

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
        """Write batches until `stop`; replay the journal when the store answers; expire old rows."""
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
        """Write everything queued now, in batches; what the store does not take goes to the journal.
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
            if not self._outage(exc):  # not an outage: a bug, said loudly (the records are kept)
                log.exception("ledger: %d record(s) not written, journaled to %s", len(entries), self.journal.path)
                return False
            log.warning("ledger: %s unavailable (%r): %d record(s) journaled to %s", self.where, exc, len(entries),
                        self.journal.path)
            return False
        self._up = True
        return True

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
        """A record the store will never take (as data): set aside, logged, never dropped."""
        rejected = LedgerJournal(f"{self.journal.path}.rejected")
        rejected.append([entry])
        log.error("ledger: %s refused the record of request %s (%r); kept in %s", self.where, entry[1].request_id,
                  exc, rejected.path)

    async def replay(self) -> int:
        """Write the journal into the store; how many entries it held (0 while it is unavailable)."""
        try:
            written = await self.journal.replay(self._store, self._config.batch_records)
        except Exception as exc:  # kept for the next replay, whatever it was
            self._up = False
            if self._outage(exc):
                log.debug("ledger journal replay deferred: %r", exc)
            else:
                log.exception("ledger journal replay failed (kept for the next one)")
            return 0
        self._up = True
        if written:
            log.warning("ledger: %d journaled record(s) written to %s", written, self.where)
        self._journaled = self.journal.count()
        self._show()
        return written

    async def _expire_logged(self) -> None:
        try:
            deleted = await self.expire()
        except Exception as exc:  # the writer outlives it: tried again in an hour
            if self._outage(exc):
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
