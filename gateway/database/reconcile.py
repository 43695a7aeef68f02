"""Reconciliation (`gateway db check`, and the drift gauge): do Redis' live budget counters,
PostgreSQL's settled spend and the spend ledger agree, to the pico-dollar? Figures:
`gateway.database.reconcile_read`. Two kinds of difference, each with its source of truth:

`redis_counter`: a live counter differs from PostgreSQL's settled total plus what it counts that
PostgreSQL has not committed yet. PostgreSQL wins, always: Redis only caches the record (a
counter it loses is rebuilt from PostgreSQL anyway). Repair: the counter is deleted, and the
gateway rebuilds it from PostgreSQL on its next use, atomically, as after a Redis flush; the
settlements it counted but PostgreSQL had not committed yet are added back when their batch
commits. No money record is touched.

`settled_spend`: a settled total (key_spend, team_spend) differs from the ledger: the sum of the
key's (team's) ledger rows in the period up to `in_flight_s` ago, plus the settlement rows since
(what is younger may still be on its way through either writer). The ledger is the reference
(one row per billed request, each with its tokens and prices, written exactly once), but the two
are written by different writers, each with its own queue and, per replica, its own journal:
either may lack records still on their way, from a machine this check cannot see. So a total is
set from the ledger only when the ledger is complete for the period: the period (a 'total' one:
since the key's creation; a team's: since the oldest key's) lies within `ledger.retention_days`
(older ledger rows are deleted) and within 35 days (older settlement rows are pruned), and the
total's own settlement rows (one per settlement, written in the transaction that adds to the
total) sum exactly to the ledger. Two records kept by different writers then agree, nothing of
the period is missing from either, and the total is the odd one out (changed outside the
gateway): it is set to that sum, its version raised (as a batch would) and its Redis counter
reset. Otherwise the difference is reported, never repaired: a request is in one record and not
the other (still journaled somewhere, or lost), or the key's budget period changed within the
period. No ledger row or settlement row is ever changed or deleted; only a total, to the sum of
its own items.

A difference is reported only if two passes `in_flight_s` apart find it, the same to the pico:
what is in flight changes between the passes, drift does not.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.database.pool import Database
from gateway.database.reconcile_read import Figures, PeriodOf, counter_key, read, read_items, read_settled, table_of
from gateway.errors import ServiceUnavailable
from gateway.money.pricing import PICO_PER_USD, usd_text

__all__ = ["CHECKS", "KEEP_SETTLEMENT_ROWS", "REDIS_COUNTER", "SETTLED_SPEND", "Difference", "Reconciler", "Report"]

log = logging.getLogger("gateway.reconcile")

REDIS_COUNTER, SETTLED_SPEND = "redis_counter", "settled_spend"
CHECKS = (REDIS_COUNTER, SETTLED_SPEND)
KEEP_SETTLEMENT_ROWS = timedelta(days=35)  # gateway.access.spend_writer prunes older settlement rows
_RESET = "reset: deleted from Redis, rebuilt from PostgreSQL's settled spend on its next use"
_FROM_LEDGER = "set from the ledger (its settlement rows agree), its Redis counter reset"


@dataclass(frozen=True, slots=True)
class Difference:
    what: str  # REDIS_COUNTER | SETTLED_SPEND
    figures: Figures
    reference: str  # where the expected figure comes from: 'postgresql' | 'ledger'
    found_in: str  # where the differing one is: 'redis' | 'postgresql'
    expected: int  # pico
    found: int  # pico
    action: str  # what --repair does (or did), or why it does not
    repairable: bool
    repaired: bool = False

    @property
    def difference(self) -> int:
        return self.found - self.expected

    @property
    def key(self) -> tuple[str, str, str, int]:
        return self.what, self.figures.target.scope, self.figures.target.period, self.difference

    def to_dict(self) -> dict[str, Any]:
        target = self.figures.target
        return {"what": self.what, "scope": target.scope, "period": target.period, "reference": self.reference,
                "expected_pico": self.expected, "found_in": self.found_in, "found_pico": self.found,
                "difference_pico": self.difference, "difference_usd": usd_text(self.difference),
                "repairable": self.repairable, "repaired": self.repaired, "action": self.action}


@dataclass(frozen=True, slots=True)
class Report:
    keys: int  # counters checked, of keys and of teams
    teams: int
    redis: bool  # Redis' counters compared with PostgreSQL's totals
    ledger: bool  # PostgreSQL's totals compared with the ledger
    differences: tuple[Difference, ...]

    @property
    def checks(self) -> tuple[str, ...]:
        return tuple(what for what, done in zip(CHECKS, (self.redis, self.ledger), strict=True) if done)

    def drift(self) -> dict[tuple[str, str], int]:
        """(scope kind, check) -> the sum of the absolute differences, pico; 0 for each one checked."""
        out = {(kind, what): 0 for kind in ("key", "team") for what in self.checks}
        for d in self.differences:
            out[d.figures.target.kind, d.what] += abs(d.difference)
        return out

    def to_dict(self) -> dict[str, Any]:
        drift: dict[str, dict[str, str]] = {}
        for (kind, what), pico in self.drift().items():
            drift.setdefault(what, {})[kind] = usd_text(pico)
        return {"checked": {"keys": self.keys, "teams": self.teams, "redis": self.redis, "ledger": self.ledger},
                "differences": [d.to_dict() for d in self.differences], "drift_usd": drift,
                "repaired": sum(d.repaired for d in self.differences)}


def _not_repairable(figures: Figures, now: datetime, ledger_days: int) -> str | None:
    """Why the settled total may not be set from the ledger (None: it may)."""
    begins = figures.target.begins
    if begins is None or begins < now - timedelta(days=ledger_days):
        return f"not repaired: the ledger keeps {ledger_days} days, this period may be older"
    if begins < now - KEEP_SETTLEMENT_ROWS:
        return f"not repaired: settlement rows older than {KEEP_SETTLEMENT_ROWS.days} days are pruned"
    if figures.settlements != (figures.ledger or 0) + figures.recent:
        return (f"not repaired: its settlement rows sum to {figures.settlements} pico, not the ledger's: a request "
                "in one record and not the other (still journaled on some replica, or lost)")
    return None


def differences(figures: Figures, now: datetime, ledger_days: int) -> list[Difference]:
    """Redis' counter against PostgreSQL's total (plus what PostgreSQL has not committed yet);
    the total against the ledger (up to the cut, then the settlement rows: what is in flight)."""
    out = []
    if figures.redis is not None and figures.redis != figures.settled + figures.pending:
        out.append(Difference(REDIS_COUNTER, figures, "postgresql", "redis", figures.settled + figures.pending,
                              figures.redis, _RESET, True))
    if figures.ledger is not None and figures.settled != figures.ledger + figures.recent:
        why = _not_repairable(figures, now, ledger_days)
        out.append(Difference(SETTLED_SPEND, figures, "ledger", "postgresql", figures.ledger + figures.recent,
                              figures.settled, why or _FROM_LEDGER, why is None))
    return out


async def _set_settled(conn: Any, figures: Figures, cut: datetime) -> bool:
    """Set a settled total to the sum of its settlement rows, if they still agree with the ledger
    (checked again under the row's lock, so no batch commits to it meanwhile); whether it was."""
    target = figures.target
    table, column = table_of(target.kind)
    async with conn.transaction():
        await conn.execute(f"SELECT 1 FROM {table} WHERE {column} = $1 AND period = $2 FOR UPDATE",
                           target.name, target.period)
        [now] = await read_settled(conn, [target], cut)
        [(items, last)] = await read_items(conn, [target])
        if items != (now.ledger or 0) + now.recent or now.settled == items:
            return False
        if now.version == 0:  # the row is gone: back, with a version above its settlements' batches
            status = await conn.execute(f"INSERT INTO {table} ({column}, period, spent_pico, version) "
                                        "VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                                        target.name, target.period, items, last + 1)
            if not status.endswith(" 1"):
                return False
        else:
            await conn.execute(f"UPDATE {table} SET spent_pico = $3, version = version + 1, updated_at = now() "
                               f"WHERE {column} = $1 AND period = $2", target.name, target.period, items)
    log.warning("settled spend of %s %s set from %d to %d pico (the ledger's)", target.scope, target.period,
                now.settled, items)
    return True


def _unreachable() -> tuple[type[BaseException], ...]:
    import asyncpg

    from gateway.runtime.redis_errors import redis_errors

    return (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError, ServiceUnavailable, *redis_errors())


class Reconciler:
    """`redis`: the gateway's Redis client (None without Redis) and its `prefix`; `period_of`:
    gateway.access.periods.period_of (that layer sits above this one). `ledger`: compare the
    settled totals with the ledger too, which reads every ledger row of the periods checked (a
    'total' period: all of a key's): `gateway db check` does; the app's periodic check (the drift
    gauge) does not, it compares Redis with PostgreSQL (point lookups) only."""

    def __init__(self, database: Database, redis: Any, prefix: str, period_of: PeriodOf, *, ledger: bool = True,
                 ledger_days: int = 400, in_flight_s: float = 2.0) -> None:
        self._db = database
        self._redis = redis
        self._prefix = prefix
        self._period_of = period_of
        self._ledger = ledger
        self._ledger_days = ledger_days
        self._in_flight = in_flight_s

    def _cut(self) -> datetime:
        return datetime.now(UTC) - timedelta(seconds=self._in_flight)

    async def _pass(self) -> Report:
        now = datetime.now(UTC)
        figures = await read(self._db, self._redis, self._prefix, now, self._cut(), self._period_of, self._ledger)
        found = tuple(d for f in figures for d in differences(f, now, self._ledger_days))
        keys = sum(f.target.kind == "key" for f in figures)
        return Report(keys, len(figures) - keys, self._redis is not None, self._ledger, found)

    async def check(self) -> Report:
        """The differences found, the same to the pico, by two passes `in_flight_s` apart (one pass
        when it is 0), with the second pass' figures."""
        first = await self._pass()
        if self._in_flight <= 0 or not first.differences:
            return first
        await asyncio.sleep(self._in_flight)
        second = await self._pass()
        seen = {d.key for d in first.differences}
        return dataclasses.replace(second, differences=tuple(d for d in second.differences if d.key in seen))

    async def repair(self, report: Report) -> Report:
        """Repair what `report` says may be: settled totals first, then the Redis counters (those
        that differed, and those whose total was set)."""
        done = [await self._repair(d) if d.repairable else d for d in report.differences]
        reset = sorted({counter_key(self._prefix, d.figures.target) for d in done if d.repaired})
        if reset and self._redis is not None:
            await self._redis.delete(*reset)
            log.warning("budget counters reset (rebuilt from PostgreSQL on next use): %s", ", ".join(reset))
        return dataclasses.replace(report, differences=tuple(done))

    async def _repair(self, d: Difference) -> Difference:
        if d.what == REDIS_COUNTER:
            return dataclasses.replace(d, repaired=True)
        async with (await self._db.pool()).acquire() as conn:
            if await _set_settled(conn, d.figures, self._cut()):
                return dataclasses.replace(d, repaired=True)
        return dataclasses.replace(d, action="not repaired: its figures changed meanwhile; run the check again")

    async def refresh(self, gauge: Any) -> Report:
        """Check, and set `gauge` (labels: scope kind, check) to each drift in USD."""
        report = await self.check()
        for (kind, what), pico in report.drift().items():
            gauge.labels(kind, what).set(pico / PICO_PER_USD)
        return report

    async def refresh_forever(self, gauge: Any, interval_s: float = 600.0) -> None:
        """`refresh` every `interval_s`, off the request path (a task of the app's); a database or
        Redis that does not answer skips a round."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                report = await self.refresh(gauge)
            except _unreachable() as exc:
                log.warning("spend reconciliation skipped: %r", exc)
                continue
            if report.differences:
                log.warning("spend reconciliation: %d difference(s); run `gateway db check`", len(report.differences))
