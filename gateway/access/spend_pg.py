"""Settled spend in PostgreSQL, the system of record (tables: migration 0003_access): per key and
per team per budget period, in integer pico-USD, plus one row per settlement so that a settlement
committed twice (replayed from a journal) counts once.

`commit` writes a batch in one call of the database function `commit_spend` (migration
0006_commit_spend, one round trip, one transaction): the new settlements' rows, then one addition
per (key or team, period) they touch, which raises that row's `version` by one. A live counter rebuilt
from (spent, version) therefore includes exactly the settlements whose batch version is <= its
own (`gateway.access.budgets_pg` relies on this). Rows are locked in a fixed order (keys before
teams, each sorted), so concurrent batches from several replicas cannot deadlock.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, NamedTuple

from gateway.access.budgets import Counter, hold_scopes
from gateway.access.journal import Settlement
from gateway.access.periods import period_of
from gateway.database.pool import Database

__all__ = ["Counter", "SpendRecord", "Versions", "counters_of"]


class Versions(NamedTuple):
    """The batch versions that first included a settlement, for its key and its team."""

    key: int | None
    team: int | None


_COMMIT = "SELECT * FROM commit_spend($1, $2, $3, $4, $5, $6, $7)"  # migration 0006_commit_spend
_VERSIONS = "SELECT id, key_version, team_version FROM spend_settlements WHERE id = ANY($1::text[])"


def counters_of(settlement: Settlement) -> list[Counter]:
    """The key's counter, then the team's (if the hold has a team), for the settlement's period."""
    return [Counter(scope, period_of(period, settlement.at)[0]) for scope, period in hold_scopes(settlement.hold)]


def _table(kind: str) -> tuple[str, str]:
    """The table and name column of a scope kind ('key' or 'team')."""
    if kind not in ("key", "team"):
        raise ValueError(f"not a budget scope kind: {kind!r}")
    return ("key_spend", "key_id") if kind == "key" else ("team_spend", "team")


def _split(scope: str) -> tuple[str, str, str]:
    kind, _, name = scope.partition(":")
    return (*_table(kind), name)


class SpendRecord:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def commit(self, batch: Iterable[Settlement]) -> dict[str, Versions]:
        """Record the settlements (each once, however often committed) and add their amounts;
        the versions of every settlement of the batch (new or committed before). Settlements of
        $0 change nothing and are not recorded (no versions)."""
        unique = {s.hold.id: s for s in batch if s.actual > 0}
        if not unique:
            return {}
        rows = await (await self._db.pool()).fetch(_COMMIT, *_columns(list(unique.values())))
        return {r[0]: Versions(r[1], r[2]) for r in rows}

    async def versions(self, ids: list[str]) -> dict[str, Versions]:
        """The versions of those settlements already committed (the others are absent)."""
        rows = await (await self._db.pool()).fetch(_VERSIONS, ids)
        return {r["id"]: Versions(r["key_version"], r["team_version"]) for r in rows}

    async def settled(self, counters: Iterable[Counter]) -> dict[Counter, tuple[int, int]]:
        """(spent pico, version) of each counter; (0, 0) where nothing was ever settled."""
        pool = await self._db.pool()
        out: dict[Counter, tuple[int, int]] = {}
        for counter in counters:
            table, column, name = _split(counter.scope)
            row = await pool.fetchrow(f"SELECT spent_pico, version FROM {table} WHERE {column} = $1 AND period = $2",
                                      name, counter.period)
            out[counter] = (int(row["spent_pico"]), int(row["version"])) if row is not None else (0, 0)
        return out

    async def prune(self, before: datetime, limit: int = 10_000) -> int:
        """Forget up to `limit` settlement rows recorded before `before` (their spend stays); how many."""
        pool = await self._db.pool()
        status = await pool.execute("DELETE FROM spend_settlements WHERE id IN (SELECT id FROM spend_settlements"
                                    " WHERE recorded_at < $1 LIMIT $2)", before, limit)
        return int(status.split()[-1])


def _columns(settlements: list[Settlement]) -> list[list[Any]]:
    counters = [counters_of(s) for s in settlements]
    return [[s.hold.id for s in settlements], [s.hold.key_id for s in settlements], [c[0].period for c in counters],
            [s.hold.team for s in settlements], [c[1].period if len(c) > 1 else None for c in counters],
            [s.actual for s in settlements], [s.at for s in settlements]]
