"""The daily spend aggregates with PostgreSQL: computed by SQL from the ledger table itself (one
GROUPING SETS query per read), so `/admin/spend` and the dashboard agree with `/admin/ledger` to
the pico-dollar by construction. Nothing is kept besides the ledger: `add` does nothing, and a
read first writes this process's queued ledger records.

Sums are PostgreSQL `numeric` (exact: a bigint sum never overflows), returned as Python ints.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime, time, timedelta
from types import MappingProxyType
from typing import Any

from gateway.ledger.report import Summary
from gateway.ledger.store_pg import PostgresLedger

__all__ = ["PostgresSpendStats"]

_DAY = "(at AT TIME ZONE 'UTC')::date"
# GROUPING(model, key_id, team, tier): a bit is 1 where that column is not grouped.
_DAYS = f"""
SELECT day, model, key_id, team, tier, GROUPING(model, key_id, team, tier) AS g, sum(cost_pico) AS pico
FROM (SELECT {_DAY} AS day, model, key_id, team, tier, cost_pico FROM ledger WHERE at >= $1 AND at < $2) AS r
GROUP BY GROUPING SETS ((day), (day, model), (day, key_id), (day, team), (day, tier))
"""
_DAY_FIELD = MappingProxyType({15: ("total", None), 7: ("model", "model"), 11: ("key", "key_id"),
                               13: ("team", "team"), 14: ("tier", "tier")})
# GROUPING(model, team, day)
_SUMMARY = f"""
SELECT model, team, day, GROUPING(model, team, day) AS g, count(*) AS n, sum(cost_pico) AS pico,
       sum(routing_saved_pico) AS routing_saved, sum(cache_saved_pico) AS cache_saved,
       count(*) FILTER (WHERE cache = 'hit') AS hits
FROM (SELECT model, team, {_DAY} AS day, cost_pico, routing_saved_pico, cache_saved_pico, cache
      FROM ledger WHERE at >= $1 AND at < $2) AS r
GROUP BY GROUPING SETS ((), (model), (team), (day))
"""


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(), UTC)


class PostgresSpendStats:
    def __init__(self, ledger: PostgresLedger) -> None:
        self._ledger = ledger

    async def add(self, at: datetime, cost: int, *, model: str, tier: str, key: str, team: str) -> None:
        return None  # the ledger's own record is what the aggregates are computed from

    async def flush(self) -> None:
        return None

    async def _fetch(self, sql: str, start: datetime, end: datetime) -> list[Any]:
        await self._ledger.flush()  # this process's newest records (other processes write every interval)
        pool = await self._ledger.database.pool()
        async with pool.acquire() as conn:
            return list(await conn.fetch(sql, start, end))

    async def days(self, first: date, last: date) -> dict[date, dict[str, int]]:
        """Per UTC day: `total`, `model:<name>`, and `key:<id>`, `team:<name>`, `tier:<name>` where
        set (as `spend_stats._fields`); integer pico-USD."""
        out: dict[date, dict[str, int]] = defaultdict(dict)
        for row in await self._fetch(_DAYS, _midnight(first), _midnight(last + timedelta(days=1))):
            kind, column = _DAY_FIELD[row["g"]]
            if column is None:
                out[row["day"]][kind] = int(row["pico"])
            elif row[column]:
                out[row["day"]][f"{kind}:{row[column]}"] = int(row["pico"])
        return dict(out)

    async def summary(self, start: datetime, end: datetime) -> Summary:
        """What the dashboard shows (as `report.summarise` computes it from the records)."""
        summary = Summary()
        for row in await self._fetch(_SUMMARY, start, end):
            pico, g = int(row["pico"] or 0), row["g"]
            if g == 7:  # the grand total (a row even when there are no records)
                summary.requests, summary.spend, summary.cache_hits = row["n"], pico, row["hits"]
                summary.routing_saved = int(row["routing_saved"] or 0)
                summary.cache_saved = int(row["cache_saved"] or 0)
            elif g == 3:
                summary.by_model[row["model"]] = pico
            elif g == 5:
                summary.by_team[row["team"] or "(no team)"] = pico
            else:
                summary.by_day[row["day"].isoformat()] = pico
        return summary
