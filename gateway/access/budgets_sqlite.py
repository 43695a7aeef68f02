"""Budgets in the embedded SQLite store (`gateway.database.sqlite`): the holds, the settled spend per
key and team per period (tables `budget_holds`, `key_spend`, `team_spend`) and each settlement's id
(`spend_settlements`) in one file, so a restart keeps spend to the pico-dollar, and the processes
sharing the file (`--workers N`) share every budget. Semantics and the overshoot bound are those of
`gateway.access.budgets`.

`reserve` is one BEGIN IMMEDIATE transaction: expired holds go, then for the key and its team
(each that has a budget) settled spend in the current period + live holds + this amount is checked
against the budget, and the hold is written, all under the file's write lock: concurrent
reservations, in this process or another, can never jointly pass a budget. (A queued reservation
always defers to `reserve`: its finisher raises `CounterMissing` with no counters, and nothing is
held.) `settle` is one transaction too: the settlement's row (its hold id: settling a hold twice
counts once), the amount added to the period rows, the hold removed.

The file unavailable (disk full, the lock not had within the busy timeout): reservations get 503,
or with `budgets.fail_open` are admitted unchecked; settlements go to the spend journal
(`gateway.access.journal`) and are applied, each once, when the file answers again. Settlement rows
older than 35 days are deleted once an hour (their spend stays).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.access.budgets import (
    CounterMissing,
    Hold,
    Scope,
    Spend,
    check_pico,
    hold_scopes,
    make_spend,
    new_hold,
    refusal,
    scopes_of,
)
from gateway.access.journal import Settlement, SpendJournal
from gateway.access.keys import Team, VirtualKey
from gateway.access.periods import period_of
from gateway.access.spend_pg import counters_of
from gateway.database.sqlite import Sqlite
from gateway.errors import ServiceUnavailable
from gateway.runtime.redis_scripts import Batch, NoBatch

__all__ = ["SqliteBudgets"]

log = logging.getLogger("gateway.budgets")
_PRUNE_EVERY_S = 3600.0
_KEEP_SETTLEMENTS = timedelta(days=35)  # a journal older than this would count twice: replays come sooner
_SETTLEMENT = ("INSERT OR IGNORE INTO spend_settlements (id, key_id, key_period, team, team_period, amount_pico,"
               " spent_at, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)")


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="microseconds")


def _table(scope: str) -> tuple[str, str, str]:
    """The spend table, its name column and the name of a scope ('key:<id>' or 'team:<name>')."""
    kind, _, name = scope.partition(":")
    if kind not in ("key", "team"):
        raise ValueError(f"not a budget scope: {scope!r}")
    return (*(("key_spend", "key_id") if kind == "key" else ("team_spend", "team")), name)


def _spent(conn: sqlite3.Connection, scope: str, period: str) -> int:
    table, column, name = _table(scope)
    row = conn.execute(f"SELECT spent_pico FROM {table} WHERE {column} = ? AND period = ?", (name, period)).fetchone()
    return int(row[0]) if row is not None else 0


def _held(conn: sqlite3.Connection, scope: str, now: float) -> int:
    row = conn.execute("SELECT coalesce(sum(amount_pico), 0) FROM budget_holds WHERE scope = ? AND expires_at > ?",
                       (scope, now)).fetchone()
    return int(row[0])


def _reserve(rows: list[tuple[str, str, int | None]], hold_id: str, amount: int, now: float, ttl_s: float,
             conn: sqlite3.Connection) -> tuple[int, int, int] | None:
    """Hold `amount` against every scope (name, period id, budget), or (index, spent, reserved) of
    the first scope that refuses (nothing held)."""
    conn.execute("DELETE FROM budget_holds WHERE expires_at <= ?", (now,))
    for index, (scope, period, budget) in enumerate(rows):
        if budget is not None:
            spent, reserved = _spent(conn, scope, period), _held(conn, scope, now)
            if spent + reserved + amount > budget:
                return index, spent, reserved
    conn.executemany("INSERT OR REPLACE INTO budget_holds (scope, hold_id, amount_pico, expires_at)"
                     " VALUES (?, ?, ?, ?)", [(scope, hold_id, amount, now + ttl_s) for scope, _, _ in rows])
    return None


def _release(hold: Hold, conn: sqlite3.Connection) -> None:
    conn.executemany("DELETE FROM budget_holds WHERE scope = ? AND hold_id = ?",
                     [(scope, hold.id) for scope, _ in hold_scopes(hold)])


def _settle(settlement: Settlement, conn: sqlite3.Connection) -> bool:
    """Remove the hold and add the amount to its periods' rows; False when that settlement was
    already counted (or costs nothing)."""
    hold = settlement.hold
    _release(hold, conn)
    if settlement.actual == 0:
        return False
    counters = counters_of(settlement)
    recorded = _iso(datetime.now(UTC))
    added = conn.execute(_SETTLEMENT, (hold.id, hold.key_id, counters[0].period, hold.team,
                                       counters[1].period if len(counters) > 1 else None, settlement.actual,
                                       _iso(settlement.at), recorded))
    if added.rowcount == 0:
        return False
    for counter in counters:
        table, column, name = _table(counter.scope)
        conn.execute(f"INSERT INTO {table} ({column}, period, spent_pico, updated_at) VALUES (?, ?, ?, ?) ON CONFLICT"
                     f" ({column}, period) DO UPDATE SET spent_pico = spent_pico + excluded.spent_pico,"
                     " updated_at = excluded.updated_at", (name, counter.period, settlement.actual, recorded))
    return True


def _position(scope: str, period: str, now: float, conn: sqlite3.Connection) -> tuple[int, int]:
    return _spent(conn, scope, period), _held(conn, scope, now)


def _prune(before: str, conn: sqlite3.Connection) -> int:
    return int(conn.execute("DELETE FROM spend_settlements WHERE id IN (SELECT id FROM spend_settlements"
                            " WHERE recorded_at < ? LIMIT 10000)", (before,)).rowcount)


class SqliteBudgets:
    def __init__(self, store: Sqlite, journal: SpendJournal, *, fail_open: bool = False) -> None:
        self._store = store
        self._journal = journal  # settlements the file could not take yet
        self._fail_open = fail_open
        self._stopping = asyncio.Event()

    def new_batch(self) -> Batch:
        return NoBatch()

    def queue_reserve(self, batch: Batch, key: VirtualKey, team: Team | None, amount_pico: int,
                      hold_ttl_s: float) -> Callable[[list[Any]], Hold]:
        def finish(_: list[Any]) -> Hold:
            raise CounterMissing([])  # a hold is a transaction on the store's thread: `reserve` takes it

        return finish

    async def reserve(self, key: VirtualKey, team: Team | None, amount_pico: int, hold_ttl_s: float) -> Hold:
        hold = new_hold(key, team, amount_pico)
        now = datetime.now(UTC)
        scopes = scopes_of(key, team)
        rows = [(s.name, period_of(s.period, now)[0], s.budget) for s in scopes]
        try:
            refused = await self._store.write(functools.partial(_reserve, rows, hold.id, amount_pico, time.time(),
                                                                hold_ttl_s))
        except ServiceUnavailable as exc:
            if not self._fail_open:
                raise
            log.warning("budgets: the SQLite store is unavailable, admitting %s unchecked: %s", key.id, exc.message)
            return hold
        if refused is not None:
            index, spent, reserved = refused
            raise refusal(scopes[index], spent, reserved, amount_pico)
        return hold

    async def settle(self, hold: Hold, actual_pico: int, at: datetime | None = None) -> None:
        settlement = Settlement(hold, check_pico(actual_pico), at or datetime.now(UTC))
        try:
            await self._store.write(functools.partial(_settle, settlement))
        except ServiceUnavailable as exc:
            self._journal.append(settlement)
            log.warning("budgets: settlement %s journaled for replay: %s", hold.id, exc.message)

    async def release(self, hold: Hold) -> None:
        await self._store.write(functools.partial(_release, hold))

    async def spend(self, key: VirtualKey) -> Spend:
        return await self._report(scopes_of(key, None)[0])

    async def team_spend(self, team: Team) -> Spend:
        return await self._report(Scope(f"team:{team.name}", team.budget_period, team.budget_pico, team.name))

    async def _report(self, scope: Scope) -> Spend:
        now = datetime.now(UTC)
        spent, reserved = await self._store.read(functools.partial(_position, scope.name,
                                                                   period_of(scope.period, now)[0], time.time()))
        return make_spend(spent, reserved, scope.budget, scope.period, now)

    async def replay(self) -> int:
        """Apply the settlements journaled while the file was unavailable (0 while it still is)."""
        async def apply(settlement: Settlement) -> bool:
            return await self._store.write(functools.partial(_settle, settlement))

        try:
            return await self._journal.replay(apply)
        except ServiceUnavailable as exc:
            log.debug("spend journal replay into SQLite deferred: %s", exc.message)
            return 0

    def backlog(self) -> tuple[int, int]:
        return 0, 0  # (its settlements are its record)

    async def run(self) -> None:
        """Delete old settlement rows once an hour, until `stop`."""
        while not self._stopping.is_set():
            try:
                await self._store.write(functools.partial(_prune, _iso(datetime.now(UTC) - _KEEP_SETTLEMENTS)))
            except ServiceUnavailable as exc:
                log.debug("settlement rows not pruned: %s", exc.message)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), _PRUNE_EVERY_S)

    def stop(self) -> None:
        self._stopping.set()
