"""What reconciliation (`gateway.database.reconcile`) compares, read in one pass.

The counters checked: every key with a budget or a settled-spend row, every team with a budget or
a settled-spend row (a team without a record counts in 'total', as the budgets do), each in its
current period. Per counter, in integer pico-USD:

    redis        the live counter in Redis, field `spent` of `<prefix>:{gw-budget}:spend:<scope>:<period>`
                 (the layout of gateway.access.budgets_pg), and `pending`: what it counts that
                 PostgreSQL has not committed yet (its `p:<hold>` fields with no settlement row)
    settled      key_spend / team_spend: the settled total, and its version
    recent       the counter's spend_settlements rows (written in the transaction that adds to the
                 total) settled at or after `cut`
    ledger       the sum of cost_pico of the key's (team's) ledger rows in the period before `cut`
    settlements  the sum of all the counter's spend_settlements rows (pruned after 35 days); read
                 only where the total differs from the ledger (for a team it scans the table)

A settlement and its ledger row carry the same time (the request's), so up to `cut` the ledger
and the settlement rows cover the same requests, and what is younger (still on its way through
either writer) is left out of the comparison: `settled` should be `ledger + recent`. Recent rows
are found by `recorded_at` (indexed; the commit time, on PostgreSQL's clock) from `cut` minus
`_CLOCKS` (the gateways' clocks may differ that much from PostgreSQL's).

With `ledger=False` only Redis and the settled totals are read: point lookups, cheap enough to
run often (the app's drift gauge), where the ledger sums read every row of every period checked.

Redis is read first, then PostgreSQL in one REPEATABLE READ snapshot: a settlement counted in
Redis and committed in between is seen committed, never counted twice. One that is counted,
committed and confirmed entirely between the two reads is missed by Redis' figure only: the
caller reads twice before it reports anything (`Reconciler.check`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from gateway.database.pool import Database

__all__ = ["Figures", "PeriodOf", "Recorded", "Target", "counter_key", "period_start", "read", "read_items",
           "read_settled", "table_of", "targets"]

PeriodOf = Callable[[str, datetime], tuple[str, datetime | None]]  # gateway.access.periods.period_of
_REDIS_BATCH = 1000  # HGETALLs per pipeline round trip
_CLOCKS = timedelta(minutes=10)

_KEYS = """
SELECT id, budget_period, created_at FROM virtual_keys k
WHERE budget_pico IS NOT NULL OR EXISTS (SELECT 1 FROM key_spend s WHERE s.key_id = k.id)
ORDER BY id
"""
_TEAMS = """
SELECT name, budget_period FROM teams t
WHERE budget_pico IS NOT NULL OR EXISTS (SELECT 1 FROM team_spend s WHERE s.team = t.name)
UNION
SELECT DISTINCT team, 'total' FROM team_spend s WHERE NOT EXISTS (SELECT 1 FROM teams t WHERE t.name = s.team)
ORDER BY 1
"""
_SETTLED = """
SELECT t.i, s.spent_pico, s.version FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS t(name, period, i)
LEFT JOIN {table} s ON s.{column} = t.name AND s.period = t.period
"""
_RECENT = """
SELECT key_id, key_period, team, team_period, amount_pico FROM spend_settlements
WHERE recorded_at >= $1 AND spent_at >= $2
"""
_SETTLEMENTS = """
SELECT t.i, COALESCE(SUM(x.amount_pico), 0) AS amount, COALESCE(MAX(x.{kind}_version), 0) AS version
FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS t(name, period, i)
LEFT JOIN spend_settlements x ON x.{column} = t.name AND x.{kind}_period = t.period
GROUP BY t.i
"""
_LEDGER = """
SELECT t.i, COALESCE(SUM(l.cost_pico), 0) AS amount
FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[]) WITH ORDINALITY AS t(name, since, until, i)
LEFT JOIN ledger l ON l.{column} = t.name
    AND l.at >= COALESCE(t.since, '-infinity') AND l.at < LEAST(COALESCE(t.until, 'infinity'), $4)
GROUP BY t.i
"""
_COMMITTED = "SELECT id FROM spend_settlements WHERE id = ANY($1::text[])"


class Target(NamedTuple):
    """One live budget counter: a key's or a team's, in one period."""

    scope: str  # 'key:<id>' | 'team:<name>'
    period: str  # 'total', 'd2026-03-14', 'w2026-03-09', 'm2026-03' (gateway.access.periods)
    start: datetime | None  # the period's start; None for 'total'
    end: datetime | None  # its end; None for 'total'
    begins: datetime | None  # the earliest spend it can hold: the period's start, or the key's creation
    # if later (a team's: the oldest key's, as any key may have served it); None: unknown

    @property
    def kind(self) -> str:
        return self.scope.partition(":")[0]

    @property
    def name(self) -> str:
        return self.scope.partition(":")[2]


@dataclass(frozen=True, slots=True)
class Figures:
    """One counter's figures, pico-USD."""

    target: Target
    settled: int  # key_spend / team_spend (0 without a row)
    version: int  # that row's version (0 without a row)
    recent: int  # its spend_settlements rows settled at or after the cut
    ledger: int | None  # its ledger rows' cost_pico within the period, before the cut; None: not read
    settlements: int | None  # the sum of all its spend_settlements rows; None: not read (not needed)
    redis: int | None  # the live counter; None: no Redis, or not there (rebuilt from PostgreSQL on use)
    pending: int  # what the live counter counts that PostgreSQL has not committed yet


def period_start(period: str) -> datetime | None:
    """The start of a stored period id ('d2026-03-14', 'w2026-03-09', 'm2026-03'); None for 'total'."""
    if period == "total":
        return None
    day = period[1:] if period[0] in "dw" else f"{period[1:]}-01"
    return datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC)


def counter_key(prefix: str, target: Target) -> str:
    """The Redis key of a live counter (gateway.access.budgets_pg)."""
    return f"{prefix}:{{gw-budget}}:spend:{target.scope}:{target.period}"


def _target(scope: str, kind: str, now: datetime, created: datetime | None, period_of: PeriodOf) -> Target:
    period, end = period_of(kind, now)
    start = period_start(period)
    begins = max(start, created) if start is not None and created is not None else start or created
    return Target(scope, period, start, end, begins)


async def targets(conn: Any, now: datetime, period_of: PeriodOf) -> list[Target]:
    """The counters to check at `now`: keys first, then teams, each sorted by name."""
    keys = await conn.fetch(_KEYS)
    teams = await conn.fetch(_TEAMS)
    oldest = await conn.fetchval("SELECT min(created_at) FROM virtual_keys")
    found = [_target(f"key:{r['id']}", r["budget_period"], now, r["created_at"], period_of) for r in keys]
    return found + [_target(f"team:{r['name']}", r["budget_period"], now, oldest, period_of) for r in teams]


def _by_kind(found: Sequence[Target]) -> dict[str, list[int]]:
    """The positions of the key counters and of the team counters."""
    kinds: dict[str, list[int]] = {"key": [], "team": []}
    for i, target in enumerate(found):
        kinds[target.kind].append(i)
    return kinds


def table_of(kind: str) -> tuple[str, str]:
    """The settled-spend table of a scope kind and its name column (in every table)."""
    return ("key_spend", "key_id") if kind == "key" else ("team_spend", "team")


class Recorded(NamedTuple):
    """One counter's figures in PostgreSQL (see Figures)."""

    settled: int
    version: int
    recent: int
    ledger: int | None


async def _recent(conn: Any, cut: datetime) -> dict[tuple[str, str], int]:
    """(scope, period) -> the amount of its settlement rows settled at or after `cut`."""
    out: dict[tuple[str, str], int] = {}
    for r in await conn.fetch(_RECENT, cut - _CLOCKS, cut):
        for scope, period in ((f"key:{r['key_id']}", r["key_period"]), (f"team:{r['team']}", r["team_period"])):
            if period is not None:
                out[scope, period] = out.get((scope, period), 0) + int(r["amount_pico"])
    return out


async def read_settled(conn: Any, found: Sequence[Target], cut: datetime, ledger: bool = True) -> list[Recorded]:
    """Each counter's settled total, and with `ledger` its recent settlement rows and its ledger
    sum, both cut at `cut`."""
    out = [Recorded(0, 0, 0, None)] * len(found)
    recent = await _recent(conn, cut) if ledger else {}
    for kind, positions in _by_kind(found).items():
        if not positions:
            continue
        table, column = table_of(kind)
        mine = [found[i] for i in positions]
        rows = await conn.fetch(_SETTLED.format(table=table, column=column), [t.name for t in mine],
                                [t.period for t in mine])
        spent = {r["i"]: (int(r["spent_pico"] or 0), int(r["version"] or 0)) for r in rows}
        sums: dict[int, int | None] = dict.fromkeys(spent)
        if ledger:
            rows = await conn.fetch(_LEDGER.format(column=column), [t.name for t in mine], [t.start for t in mine],
                                    [t.end for t in mine], cut)
            sums = {r["i"]: int(r["amount"]) for r in rows}
        for n, i in enumerate(positions, start=1):
            out[i] = Recorded(*spent[n], recent.get((found[i].scope, found[i].period), 0), sums[n])
    return out


async def read_items(conn: Any, found: Sequence[Target]) -> list[tuple[int, int]]:
    """Per counter: (the sum of all its settlement rows, the highest batch version among them, 0
    for none)."""
    out = [(0, 0)] * len(found)
    for kind, positions in _by_kind(found).items():
        if positions:
            column = table_of(kind)[1]
            rows = await conn.fetch(_SETTLEMENTS.format(kind=kind, column=column),
                                    [found[i].name for i in positions], [found[i].period for i in positions])
            items = {r["i"]: (int(r["amount"]), int(r["version"])) for r in rows}
            for n, i in enumerate(positions, start=1):
                out[i] = items[n]
    return out


async def _read_redis(redis: Any, prefix: str, found: Sequence[Target]) -> list[tuple[int, dict[str, int]] | None]:
    """Per counter: (spent, {hold id: amount not yet confirmed}), or None when it is not there."""
    out: list[tuple[int, dict[str, int]] | None] = []
    for at in range(0, len(found), _REDIS_BATCH):
        pipe = redis.pipeline(transaction=False)
        for target in found[at:at + _REDIS_BATCH]:
            pipe.hgetall(counter_key(prefix, target))
        out += [_counter(fields) for fields in await pipe.execute()]
    return out


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _counter(fields: dict[Any, Any]) -> tuple[int, dict[str, int]] | None:
    if not fields:
        return None
    text = {_text(k): _text(v) for k, v in fields.items()}
    return int(text.get("spent", "0")), {k[2:]: int(v) for k, v in text.items() if k.startswith("p:")}


async def read(database: Database, redis: Any, prefix: str, now: datetime, cut: datetime, period_of: PeriodOf,
               ledger: bool = True) -> list[Figures]:
    """Every counter's figures at `now` (`redis` None: without Redis figures; `ledger` False:
    without the ledger's and the settlement rows')."""
    pool = await database.pool()
    async with pool.acquire() as conn:
        found = await targets(conn, now, period_of)
    live = await _read_redis(redis, prefix, found) if redis is not None else [None] * len(found)
    holds = [hold for counter in live if counter is not None for hold in counter[1]]
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        recorded = await read_settled(conn, found, cut, ledger)
        odd = [i for i, r in enumerate(recorded) if r.ledger is not None and r.settled != r.ledger + r.recent]
        items = dict(zip(odd, await read_items(conn, [found[i] for i in odd]), strict=True)) if odd else {}
        committed = {r["id"] for r in await conn.fetch(_COMMITTED, holds)} if holds else set()
    figures = []
    for i, (target, pg, counter) in enumerate(zip(found, recorded, live, strict=True)):
        spent, pending = counter if counter is not None else (None, {})
        uncommitted = sum(amount for hold, amount in pending.items() if hold not in committed)
        settlements = items[i][0] if i in items else None
        figures.append(Figures(target, pg.settled, pg.version, pg.recent, pg.ledger, settlements, spent, uncommitted))
    return figures
