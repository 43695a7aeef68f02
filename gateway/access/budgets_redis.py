"""Budgets in Redis, shared by every gateway process and replica (semantics: gateway.access.budgets).

Per scope (a key or a team), under one `{gw-budget}` hash tag so a key and its team are checked
in ONE Lua script on one Cluster slot:

    <prefix>:{gw-budget}:holds:<scope>          ZSET hold id -> expiry (Redis server ms)
    <prefix>:{gw-budget}:held:<scope>           HASH hold id -> pico amount, '#sum' -> their total
    <prefix>:{gw-budget}:spent:<scope>:<period> pico spent in that period (INCRBY)
    <prefix>:{gw-budget}:settled:<hold id>      marks a settled hold (idempotent settle, replay)

Expired holds are purged inside every script before anything is counted; hold structures expire
with their longest hold, spent counters `spent_grace_s` after their period ends ('total' spend
never expires: it is the budget), settled marks after `settled_ttl_s`. Hold expiry uses the Redis
server clock, so replicas with skewed clocks agree.

Exactness: counters are Redis int64 (INCRBY / HINCRBY), i.e. up to 9.2e18 pico-USD = about
$9.2 million per key, team and period. Lua numbers are doubles (exact only to 2^53 pico, ~$9,007),
so the budget comparison splits every figure into base-1e9 halves and compares those exactly.

If Redis is down: `settle` writes to the spend journal (when one is given) and `replay` applies
it later; `reserve` raises ServiceUnavailable, or with `fail_open` admits the request unchecked.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from gateway.access.budgets import Hold, Scope, Spend, check_pico, hold_scopes, make_spend, new_hold, refusal, scopes_of
from gateway.access.journal import Settlement, SpendJournal
from gateway.access.keys import Team, VirtualKey
from gateway.access.periods import Period, period_of
from gateway.runtime.redis_errors import pool_exhausted, redis_errors, store_unavailable
from gateway.runtime.redis_scripts import Batch, Riders, ScriptBatch

__all__ = ["LUA_LIB", "RedisBudgets", "spent_ttl_ms"]

log = logging.getLogger("gateway.budgets")

LUA_LIB = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function drop(h, id)
  local amount = redis.call('HGET', h, id)
  if amount then
    redis.call('HDEL', h, id)
    if amount ~= '0' then redis.call('HINCRBY', h, '#sum', '-' .. amount) end
  end
end
local function purge(z, h, now)
  local expired = redis.call('ZRANGEBYSCORE', z, '-inf', now)
  for _, id in ipairs(expired) do drop(h, id) end
  if #expired > 0 then redis.call('ZREMRANGEBYSCORE', z, '-inf', now) end
end
local function split(s)
  s = tostring(s)
  if #s <= 9 then return 0, tonumber(s) end
  return tonumber(string.sub(s, 1, -10)), tonumber(string.sub(s, -9))
end
local function exceeds(a, b, c, limit)
  local ah, al = split(a)
  local bh, bl = split(b)
  local ch, cl = split(c)
  local lh, ll = split(limit)
  local lo = al + bl + cl
  local hi = ah + bh + ch + math.floor(lo / 1000000000)
  lo = lo % 1000000000
  return hi > lh or (hi == lh and lo > ll)
end
"""
# KEYS = (holds, held, spent) per scope; ARGV = hold id, amount, ttl ms, budget per scope ('' = none).
# Returns {0} when held, else {scope index, spent, reserved} of the first scope that refuses.
_RESERVE = LUA_LIB + """
local now = now_ms()
local n = #KEYS / 3
for i = 1, n do
  local z, h, s = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  purge(z, h, now)
  local budget = ARGV[3 + i]
  if budget ~= '' then
    local spent = redis.call('GET', s) or '0'
    local held = redis.call('HGET', h, '#sum') or '0'
    if exceeds(spent, held, ARGV[2], budget) then return {i, spent, held} end
  end
end
local ttl = tonumber(ARGV[3])
for i = 1, n do
  local z, h = KEYS[3 * i - 2], KEYS[3 * i - 1]
  redis.call('ZADD', z, now + ttl, ARGV[1])
  redis.call('HSET', h, ARGV[1], ARGV[2])
  redis.call('HINCRBY', h, '#sum', ARGV[2])
  if redis.call('PTTL', z) < ttl then
    redis.call('PEXPIRE', z, ttl)
    redis.call('PEXPIRE', h, ttl)
  end
end
return {0}
"""
# KEYS = (holds, held, spent) per scope, then the settled mark; ARGV = hold id, actual, mark ttl
# ms, spent ttl ms per scope (0 = never expires). Returns 0 if the hold was already settled.
_SETTLE = LUA_LIB + """
if not redis.call('SET', KEYS[#KEYS], '1', 'NX', 'PX', ARGV[3]) then return 0 end
for i = 1, (#KEYS - 1) / 3 do
  local z, h, s = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  drop(h, ARGV[1])
  redis.call('ZREM', z, ARGV[1])
  if ARGV[2] ~= '0' then redis.call('INCRBY', s, ARGV[2]) end
  local ttl = tonumber(ARGV[3 + i])
  if ttl > 0 then redis.call('PEXPIRE', s, ttl) else redis.call('PERSIST', s) end
end
return 1
"""
# KEYS = (holds, held) per scope; ARGV = hold id.
_RELEASE = LUA_LIB + """
for i = 1, #KEYS / 2 do
  drop(KEYS[2 * i], ARGV[1])
  redis.call('ZREM', KEYS[2 * i - 1], ARGV[1])
end
return 1
"""
# KEYS = holds, held, spent of one scope. Returns {spent, reserved}.
_SPEND = LUA_LIB + """
purge(KEYS[1], KEYS[2], now_ms())
return {redis.call('GET', KEYS[3]) or '0', redis.call('HGET', KEYS[2], '#sum') or '0'}
"""


def spent_ttl_ms(period: Period, at: datetime, grace_ms: int) -> int:
    """How long the spent counter of the `period` containing `at` is kept: until the period ends,
    plus the grace; 0 (for ever) for 'total'."""
    end = period_of(period, at)[1]
    return 0 if end is None else max(int(end.timestamp() * 1000) - int(time.time() * 1000), 0) + grace_ms


class RedisBudgets:
    def __init__(
        self,
        redis: Any,
        prefix: str = "gw",
        *,
        journal: SpendJournal | None = None,
        fail_open: bool = False,
        spent_grace_s: int = 86400,
        settled_ttl_s: int = 7 * 86400,
    ) -> None:
        self._redis = redis
        self._prefix = f"{prefix}:{{gw-budget}}"
        self._journal = journal
        self._fail_open = fail_open
        self._grace_ms = spent_grace_s * 1000
        self._settled_ms = settled_ttl_s * 1000
        self._reserve = redis.register_script(_RESERVE)
        self._settle = redis.register_script(_SETTLE)
        self._riders = Riders(redis)  # settlements ride with the next reservation
        self._release = redis.register_script(_RELEASE)
        self._spend = redis.register_script(_SPEND)

    def _keys(self, scope: str, period: Period, at: datetime) -> list[str]:
        p = self._prefix
        return [f"{p}:holds:{scope}", f"{p}:held:{scope}", f"{p}:spent:{scope}:{period_of(period, at)[0]}"]

    def new_batch(self) -> Batch:
        return ScriptBatch(self._redis, self._riders)

    async def reserve(self, key: VirtualKey, team: Team | None, amount_pico: int, hold_ttl_s: float) -> Hold:
        batch = self.new_batch()
        finish = self.queue_reserve(batch, key, team, amount_pico, hold_ttl_s)
        return finish(await batch.run())

    def queue_reserve(
        self, batch: Batch, key: VirtualKey, team: Team | None, amount_pico: int, hold_ttl_s: float
    ) -> Callable[[list[Any]], Hold]:
        """Queue the reservation in `batch` (it may share a round trip with other calls); the
        returned function turns the batch's results into the Hold, or raises."""
        hold = new_hold(key, team, amount_pico)
        scopes = scopes_of(key, team)
        now = datetime.now(UTC)
        keys = [k for s in scopes for k in self._keys(s.name, s.period, now)]
        budgets = ["" if s.budget is None else str(s.budget) for s in scopes]
        index = batch.add(self._reserve, keys, [hold.id, amount_pico, max(int(hold_ttl_s * 1000), 1), *budgets])

        def finish(results: list[Any]) -> Hold:
            result = results[index]
            if isinstance(result, redis_errors()):
                if self._fail_open and not isinstance(result, pool_exhausted()):  # never while Redis answers
                    log.warning("budgets: Redis unavailable, admitting %s unchecked: %r", key.id, result)
                    return hold
                raise store_unavailable("budget store", result) from result
            if isinstance(result, Exception):
                raise result
            if int(result[0]):
                scope: Scope = scopes[int(result[0]) - 1]
                raise refusal(scope, int(result[1]), int(result[2]), amount_pico)
            return hold

        return finish

    async def settle(self, hold: Hold, actual_pico: int, at: datetime | None = None) -> None:
        settlement = Settlement(hold, check_pico(actual_pico), at or datetime.now(UTC))
        try:
            await self.apply(settlement)
        except redis_errors() as exc:
            if self._journal is None:
                log.error("budgets: Redis unavailable, settlement of %s LOST (no journal): %r", hold.id, exc)
                raise
            self._journal.append(settlement)
            log.warning("budgets: Redis unavailable, settlement of %s journaled: %r", hold.id, exc)

    async def apply(self, settlement: Settlement) -> bool:
        """Record one settlement in Redis; False if that hold was already settled."""
        hold, at = settlement.hold, settlement.at
        keys: list[str] = []
        ttls: list[int] = []
        for scope, period in hold_scopes(hold):
            keys += self._keys(scope, period, at)
            ttls.append(spent_ttl_ms(period, at, self._grace_ms))
        keys.append(f"{self._prefix}:settled:{hold.id}")
        args = [hold.id, settlement.actual, self._settled_ms, *ttls]
        return bool(await self._riders.call(self._settle, keys, args))

    async def replay(self) -> int:
        """Apply the journaled settlements (call when Redis answers again); how many."""
        return await self._journal.replay(self.apply) if self._journal is not None else 0

    def backlog(self) -> tuple[int, int]:
        return 0, 0  # (its settlements are its record)

    async def run(self) -> None:
        return None  # settlements go straight to Redis: nothing to write in the background

    def stop(self) -> None:
        return None

    async def release(self, hold: Hold) -> None:
        keys = [k for scope, _ in hold_scopes(hold) for k in self._keys(scope, "total", datetime.now(UTC))[:2]]
        try:
            await self._release(keys=keys, args=[hold.id])
        except redis_errors() as exc:  # the hold expires by itself
            log.warning("budgets: could not release %s (it will expire): %r", hold.id, exc)

    async def spend(self, key: VirtualKey) -> Spend:
        return await self._report(scopes_of(key, None)[0])

    async def team_spend(self, team: Team) -> Spend:
        return await self._report(Scope(f"team:{team.name}", team.budget_period, team.budget_pico, team.name))

    async def _report(self, scope: Scope) -> Spend:
        now = datetime.now(UTC)
        spent, reserved = await self._spend(keys=self._keys(scope.name, scope.period, now), args=[])
        return make_spend(int(spent), int(reserved), scope.budget, scope.period, now)
