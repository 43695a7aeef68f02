"""Budgets for one process without Redis, with PostgreSQL as the record: the counters live in this
process's memory (semantics: `MemoryBudgets`), every settlement is also written to PostgreSQL off
the request path (`SpendWriter`), and each counter starts from PostgreSQL's settled spend the first
time it is used, so a restart never resets spend.

A counter is loaded with the record's (spent, version); a settlement counted here before its
commit is remembered until the commit confirms it, and one this process could not count (the
counter not loaded while PostgreSQL was down) is added by its confirmation when the loaded
version predates its batch: the same rule as `gateway.access.budgets_pg`, so nothing counts twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from gateway.access.budgets import Counter, CounterMissing, Hold, MemoryBudgets, Spend, check_pico, scopes_of
from gateway.access.journal import Settlement, SpendJournal
from gateway.access.keys import Team, VirtualKey
from gateway.access.keys_pg import database_errors, unavailable
from gateway.access.periods import period_of
from gateway.access.spend_pg import SpendRecord, Versions, counters_of
from gateway.access.spend_writer import SpendWriter
from gateway.errors import ServiceUnavailable
from gateway.runtime.redis_scripts import Batch

__all__ = ["RecordedMemoryBudgets"]


class RecordedMemoryBudgets(MemoryBudgets):
    def __init__(self, record: SpendRecord, record_journal: SpendJournal, writer: dict[str, Any] | None = None) -> None:
        super().__init__()
        self._record = record
        self._base: dict[Counter, int] = {}  # loaded counters: the record's version they started from
        self._pending: set[str] = set()  # hold ids counted here, not yet confirmed committed
        self._confirmed: dict[str, float] = {}  # hold id -> forget after: confirmed (never twice)
        self.writer = SpendWriter(record, self._confirm, record_journal, **(writer or {}))

    async def _load(self, counters: Iterable[Counter]) -> None:
        wanted = [c for c in counters if c not in self._base]
        if not wanted:
            return
        try:
            found = await self._record.settled(wanted)
        except database_errors() as exc:
            raise unavailable(exc) from exc
        for counter, (spent, version) in found.items():
            if counter not in self._base:  # (another task may have loaded it meanwhile)
                self._base[counter] = version
                self._spent[(counter.scope, counter.period)] = spent

    def _budgeted(self, key: VirtualKey, team: Team | None) -> list[Counter]:
        now = datetime.now(UTC)
        return [Counter(s.name, period_of(s.period, now)[0]) for s in scopes_of(key, team) if s.budget is not None]

    def queue_reserve(self, batch: Batch, key: VirtualKey, team: Team | None, amount_pico: int,
                      hold_ttl_s: float) -> Callable[[list[Any]], Hold]:
        def finish(_: list[Any]) -> Hold:
            missing = [c for c in self._budgeted(key, team) if c not in self._base]
            if missing:
                raise CounterMissing(missing)
            return self._reserve(key, team, amount_pico, hold_ttl_s)

        return finish

    async def reserve(self, key: VirtualKey, team: Team | None, amount_pico: int, hold_ttl_s: float) -> Hold:
        await self._load(self._budgeted(key, team))
        return self._reserve(key, team, amount_pico, hold_ttl_s)

    async def settle(self, hold: Hold, actual_pico: int, at: datetime | None = None) -> None:
        settlement = Settlement(hold, check_pico(actual_pico), at or datetime.now(UTC))
        try:
            await self._load(counters_of(settlement))
        except ServiceUnavailable:  # counted by its confirmation, once committed
            self.writer.add(settlement)
            return
        if settlement.actual > 0 and hold.id not in self._settled:
            self._pending.add(hold.id)
        await super().settle(hold, settlement.actual, settlement.at)
        if settlement.actual > 0:
            self.writer.add(settlement)

    async def _confirm(self, committed: list[tuple[Settlement, Versions | None]]) -> None:
        now = time.time()
        if len(self._confirmed) > 10_000:
            self._confirmed = {h: until for h, until in self._confirmed.items() if until > now}
        for settlement, versions in committed:
            hold_id = settlement.hold.id
            await self.release(settlement.hold)
            if versions is None or self._confirmed.get(hold_id, 0.0) > now:
                continue
            self._confirmed[hold_id] = now + self._settled_ttl
            if hold_id in self._pending:
                self._pending.discard(hold_id)
                continue
            for counter, version in zip(counters_of(settlement), versions, strict=False):
                if version is not None and counter in self._base and self._base[counter] < version:
                    slot = (counter.scope, counter.period)
                    self._spent[slot] = self._spent.get(slot, 0) + settlement.actual

    async def spend(self, key: VirtualKey) -> Spend:
        scope = scopes_of(key, None)[0]
        await self._load([Counter(scope.name, period_of(scope.period, datetime.now(UTC))[0])])
        return await super().spend(key)

    async def team_spend(self, team: Team) -> Spend:
        await self._load([Counter(f"team:{team.name}", period_of(team.budget_period, datetime.now(UTC))[0])])
        return await super().team_spend(team)

    async def replay(self) -> int:
        return await self.writer.replay()

    def backlog(self) -> tuple[int, int]:
        return self.writer.backlog()

    async def run(self) -> None:
        await self.writer.run()

    def stop(self) -> None:
        self.writer.stop()

    async def flush(self) -> None:
        await self.writer.flush()
