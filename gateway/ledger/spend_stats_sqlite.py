"""The daily spend aggregates with the embedded SQLite store: computed by SQL from the ledger table
itself (as `spend_stats_pg` does in PostgreSQL), so `/admin/spend` and the dashboard agree with
`/admin/ledger` to the pico-dollar by construction. Nothing is kept besides the ledger: `add` does
nothing, and a read first writes this process's queued ledger records. Sums are SQLite integers
(exact; 64 bits, about $9.2 million per group and day).
"""

from __future__ import annotations

import functools
import sqlite3
from collections import defaultdict
from datetime import UTC, date, datetime, time, timedelta

from gateway.ledger.report import Summary
from gateway.ledger.store import iso
from gateway.ledger.store_sqlite import SqliteLedger

__all__ = ["SqliteSpendStats"]

_RANGE = "FROM ledger WHERE at >= ?1 AND at < ?2"
_DAY = "substr(at, 1, 10)"  # times are UTC ISO strings
_DAYS = " UNION ALL ".join([
    f"SELECT {_DAY} AS day, 'total' AS kind, '' AS name, sum(cost_pico) AS pico {_RANGE} GROUP BY 1",
    *(f"SELECT {_DAY}, '{kind}', {column}, sum(cost_pico) {_RANGE} GROUP BY 1, 3"
      for kind, column in (("model", "model"), ("key", "key_id"), ("team", "team"), ("tier", "tier"))),
])
_SUMMARY = " UNION ALL ".join([
    "SELECT 'all' AS kind, '' AS name, count(*) AS n, coalesce(sum(cost_pico), 0) AS pico,"
    " coalesce(sum(routing_saved_pico), 0) AS routing_saved, coalesce(sum(cache_saved_pico), 0) AS cache_saved,"
    f" coalesce(sum(cache = 'hit'), 0) AS hits {_RANGE}",
    *(f"SELECT '{kind}', {column}, 0, sum(cost_pico), 0, 0, 0 {_RANGE} GROUP BY 2"
      for kind, column in (("model", "model"), ("team", "team"), ("day", _DAY))),
])


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(), UTC)


def _query(sql: str, start: str, end: str, conn: sqlite3.Connection) -> list[sqlite3.Row]:
    return conn.execute(sql, (start, end)).fetchall()


class SqliteSpendStats:
    def __init__(self, ledger: SqliteLedger) -> None:
        self._ledger = ledger

    async def add(self, at: datetime, cost: int, *, model: str, tier: str, key: str, team: str) -> None:
        return None  # the ledger's own record is what the aggregates are computed from

    async def flush(self) -> None:
        return None

    async def _fetch(self, sql: str, start: datetime, end: datetime) -> list[sqlite3.Row]:
        await self._ledger.flush()  # this process's newest records (other processes write every interval)
        return await self._ledger.store.read(functools.partial(_query, sql, iso(start), iso(end)))

    async def days(self, first: date, last: date) -> dict[date, dict[str, int]]:
        """Per UTC day: `total`, and `model:<name>`, `key:<id>`, `team:<name>`, `tier:<name>` where
        set (as `spend_stats._fields`); integer pico-USD."""
        out: dict[date, dict[str, int]] = defaultdict(dict)
        for row in await self._fetch(_DAYS, _midnight(first), _midnight(last + timedelta(days=1))):
            day = date.fromisoformat(row["day"])
            if row["kind"] == "total":
                out[day]["total"] = int(row["pico"])
            elif row["name"]:
                out[day][f"{row['kind']}:{row['name']}"] = int(row["pico"])
        return dict(out)

    async def summary(self, start: datetime, end: datetime) -> Summary:
        """What the dashboard shows (as `report.summarise` computes it from the records)."""
        summary = Summary()
        for row in await self._fetch(_SUMMARY, start, end):
            kind, pico = row["kind"], int(row["pico"])
            if kind == "all":
                summary.requests, summary.spend, summary.cache_hits = row["n"], pico, row["hits"]
                summary.routing_saved, summary.cache_saved = row["routing_saved"], row["cache_saved"]
            elif kind == "model":
                summary.by_model[row["name"]] = pico
            elif kind == "team":
                summary.by_team[row["name"] or "(no team)"] = pico
            else:
                summary.by_day[row["name"]] = pico
        return summary
