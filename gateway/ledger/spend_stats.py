"""Spend aggregates per UTC day, by key, team, model and tier: what `GET /admin/spend` reads.
In Redis one hash per day (`<prefix>:{gw-spend}:day:YYYY-MM-DD`, fields `model:<name>`,
`key:<id>`, `team:<name>`, `tier:<name>`, `total`; integer pico-USD via HINCRBY; kept 400 days);
in memory for one process otherwise. A Redis failure loses only these aggregates (logged and
counted); budgets keep their own record.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from datetime import date, datetime, timedelta
from typing import Any, Protocol

from gateway.runtime.redis_errors import redis_errors

__all__ = ["GROUPS", "MemorySpendStats", "RedisSpendStats", "SpendStats", "aggregate"]

log = logging.getLogger("gateway.spend")
GROUPS = ("model", "key", "team", "tier", "day")
_KEEP_S = 400 * 86400


def _fields(cost: int, model: str, tier: str, key: str, team: str) -> dict[str, int]:
    out = {"total": cost, f"model:{model}": cost}
    for name, value in (("tier", tier), ("key", key), ("team", team)):
        if value:
            out[f"{name}:{value}"] = cost
    return out


class SpendStats(Protocol):
    async def add(self, at: datetime, cost: int, *, model: str, tier: str, key: str, team: str) -> None: ...

    async def days(self, first: date, last: date) -> dict[date, dict[str, int]]: ...

    async def flush(self) -> None:
        """Write what is still pending, now (at shutdown)."""
        ...


class MemorySpendStats:
    def __init__(self) -> None:
        self._days: dict[date, dict[str, int]] = defaultdict(lambda: defaultdict(int))

    async def add(self, at: datetime, cost: int, *, model: str, tier: str, key: str, team: str) -> None:
        day = self._days[at.date()]
        for name, value in _fields(cost, model, tier, key, team).items():
            day[name] += value

    async def days(self, first: date, last: date) -> dict[date, dict[str, int]]:
        return {d: dict(v) for d, v in self._days.items() if first <= d <= last}

    async def flush(self) -> None:
        return None  # nothing is pending: every sum is already in place


class RedisSpendStats:
    """Sums are kept in memory and written every `batch_s` in one pipeline (HINCRBY per day and
    field), so a request costs no Redis round trip here; a crash loses at most that interval."""

    def __init__(self, redis: Any, prefix: str, batch_s: float = 1.0) -> None:
        self._redis = redis
        self._prefix = f"{prefix}:{{gw-spend}}:day:"
        self._batch_s = batch_s
        self._pending: dict[tuple[date, str], int] = defaultdict(int)
        self._flush: asyncio.Task[None] | None = None

    async def add(self, at: datetime, cost: int, *, model: str, tier: str, key: str, team: str) -> None:
        day = at.date()
        for field_name, value in _fields(cost, model, tier, key, team).items():
            self._pending[day, field_name] += value
        if self._flush is None or self._flush.done():
            self._flush = asyncio.get_running_loop().create_task(self._write())

    async def _write(self) -> None:
        await asyncio.sleep(self._batch_s)
        await self.flush()

    async def flush(self) -> None:
        batch, self._pending = self._pending, defaultdict(int)
        if not batch:
            return
        try:
            pipe = self._redis.pipeline(transaction=False)
            for (day, field_name), value in batch.items():
                pipe.hincrby(self._prefix + day.isoformat(), field_name, value)
            for day in {d for d, _ in batch}:
                pipe.expire(self._prefix + day.isoformat(), _KEEP_S)
            await pipe.execute()
        except redis_errors() as exc:
            log.warning("spend aggregates not written (Redis unavailable): %r", exc)

    async def days(self, first: date, last: date) -> dict[date, dict[str, int]]:
        wanted = [first + timedelta(days=i) for i in range((last - first).days + 1)]
        pipe = self._redis.pipeline(transaction=False)
        for d in wanted:
            pipe.hgetall(self._prefix + d.isoformat())
        rows = await pipe.execute()
        return {d: {k.decode(): int(v) for k, v in row.items()} for d, row in zip(wanted, rows, strict=True) if row}


def aggregate(days: dict[date, dict[str, int]], group_by: str) -> dict[str, int]:
    """Pico-USD per group over the given days; `day` groups by date."""
    out: dict[str, int] = defaultdict(int)
    for d, fields in days.items():
        if group_by == "day":
            out[d.isoformat()] += fields.get("total", 0)
            continue
        for name, value in fields.items():
            kind, _, group = name.partition(":")
            if kind == group_by:
                out[group] += value
    return dict(sorted(out.items()))
