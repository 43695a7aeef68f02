"""Settled spend to PostgreSQL off the request path: `add` only appends to a bounded queue; `run`
writes it in batches (one transaction each, `SpendRecord.commit`) and then hands every settlement
with its batch versions to `confirm` (the live counters' side, `gateway.access.budgets_pg`).

Nothing is lost when PostgreSQL is down or slow: a batch that cannot be committed, and whatever
arrives while the queue is full, goes to a spend journal (`gateway.access.journal`), which
`replay` commits once PostgreSQL answers again. Committing is idempotent per settlement id (the
budget hold's id), so a settlement journaled although it was committed counts once. `stop`, then
awaiting `run`, writes everything queued (or journals it) before returning: stop it that way,
never by cancelling it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from gateway.access.journal import Settlement, SpendJournal
from gateway.access.keys_pg import database_errors
from gateway.access.spend_pg import SpendRecord, Versions

__all__ = ["Confirm", "SpendWriter"]

log = logging.getLogger("gateway.budgets")

Confirm = Callable[[list[tuple[Settlement, Versions | None]]], Awaitable[None]]
_PRUNE_EVERY_S = 3600.0
_KEEP_SETTLEMENTS = timedelta(days=35)  # a journal older than this would count twice: replays come sooner


class SpendWriter:
    def __init__(self, record: SpendRecord, confirm: Confirm, journal: SpendJournal, *, max_queued: int = 100_000,
                 batch_size: int = 1000, interval_s: float = 0.05) -> None:
        self._record = record
        self._confirm = confirm
        self._journal = journal
        self._max = max_queued
        self._batch = batch_size
        self._interval = interval_s
        self._queue: deque[Settlement] = deque()
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._stopping = False
        self._pruned = time.monotonic()

    @property
    def queued(self) -> int:
        return len(self._queue)

    def backlog(self) -> tuple[int, int]:
        """(queued, in the local journal): settlements not yet in PostgreSQL (the journal is read
        from disk: for /readyz, not the request path)."""
        return len(self._queue), len(self._journal.pending())

    def add(self, settlement: Settlement) -> None:
        """Queue one settlement (never blocks on the database; journals it when the queue is full)."""
        if len(self._queue) >= self._max:
            self._journal.append(settlement)
            log.warning("settled spend queue full (%d): settlement %s journaled", self._max, settlement.hold.id)
            return
        self._queue.append(settlement)
        if len(self._queue) >= self._batch or self._stopping:
            self._wake.set()

    async def run(self) -> None:
        """Write batches every `interval_s` (at once when a batch is full) until `stop`."""
        while not self._stopping:
            with contextlib.suppress(TimeoutError):  # the interval passed: write what there is
                await asyncio.wait_for(self._wake.wait(), self._interval)
            self._wake.clear()
            await self.flush()
        await self.flush()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def flush(self) -> None:
        """Write (or journal) everything queued now."""
        async with self._lock:
            while self._queue:
                batch = [self._queue.popleft() for _ in range(min(self._batch, len(self._queue)))]
                await self._write(batch)
            if time.monotonic() - self._pruned > _PRUNE_EVERY_S:
                self._pruned = time.monotonic()
                await self._prune()

    async def _write(self, batch: list[Settlement]) -> None:
        try:
            versions = await self._record.commit(batch)
        except database_errors() as exc:
            for settlement in batch:
                self._journal.append(settlement)
            log.warning("database unavailable: %d settlement(s) journaled for replay: %r", len(batch), exc)
            return
        await self._confirm([(s, versions.get(s.hold.id)) for s in batch])

    async def _prune(self) -> None:
        try:
            await self._record.prune(datetime.now(UTC) - _KEEP_SETTLEMENTS)
        except database_errors() as exc:
            log.debug("settlement rows not pruned: %r", exc)

    async def replay(self) -> int:
        """Commit what was journaled while the database was down; how many were new to it (0
        while it is still down: the journal keeps them)."""
        async def apply(settlement: Settlement) -> bool:
            versions = await self._record.commit([settlement])
            await self._confirm([(settlement, versions.get(settlement.hold.id))])
            return True

        try:
            return await self._journal.replay(apply)
        except database_errors() as exc:
            log.debug("spend journal replay into the database deferred: %r", exc)
            return 0
