"""Budgets whose settled spend survives anything Redis does: Redis keeps the holds and the live
counters (the hot path, semantics as `gateway.access.budgets_redis`), PostgreSQL keeps the settled
spend (`SpendRecord`, written off the request path by `SpendWriter`), and a live counter that is
missing from Redis (flushed, restarted without persistence, evicted, expired) is rebuilt from
PostgreSQL before it is used, so spend never resets.

Per counter (a key's or team's scope in one period), under the `{gw-budget}` hash tag:

    <prefix>:{gw-budget}:spend:<scope>:<period>   HASH spent     pico settled (as Redis counts it)
                                                       base      the record's version it was rebuilt from
                                                       p:<hold>  counted here, not yet confirmed committed
    <prefix>:{gw-budget}:spend:<scope>:<period>:late  HASH <hold> -> '<version>:<pico>' confirmed while missing
    <prefix>:{gw-budget}:settled:<hold>           '1' counted (settle ran), '2' confirmed

(holds as in RedisBudgets). A settlement is counted in Redis at once (`settle`, marked `p:`), then
committed to PostgreSQL in a batch whose version for that counter is `v`, then confirmed, once (the
settled mark): if the counter still has its `p:` mark the mark goes; otherwise the counter lost it
(rebuilt since) and adds it only if it was rebuilt from a version below `v`. So every settlement
is counted exactly once whatever Redis loses, and whenever: a rebuilt counter includes exactly
the committed batches up to its base, and confirmations add the rest. A confirmation that finds
its counter missing leaves its (version, amount) beside it (`<counter>:late`), and the replica
that rebuilds the counter adds it if its read predates that batch: a batch that commits and is
confirmed between a rebuild's read and its creation is not lost. (The settled marks expire
after `settled_ttl_s`, as in RedisBudgets; a confirmation replayed later than that, onto a counter
that kept its record all along, would count twice.)

Rebuilding is race-free across replicas: every script that needs a counter refuses to run while
it is missing (nothing changes) and says which; the caller reads (spent, version) from PostgreSQL
and runs the script again with them, and the script creates the counter only if it is still
missing, in the same atomic step that uses it. Whichever replica creates it first wins; the
others use its value, and any batch committed after either read is confirmed on top.

If Redis is down at settle time, the settlement is still committed, and its confirmation (which
then adds it) waits in the spend journal until Redis answers. If PostgreSQL is down, settlements
wait in the record's own journal (`SpendWriter`); a counter that is missing then cannot be
rebuilt, so reservations against it get 503 (or, with `fail_open`, are admitted unchecked).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from gateway.access.budgets import (
    Counter,
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
from gateway.access.budgets_redis import LUA_LIB, RedisBudgets, spent_ttl_ms
from gateway.access.journal import Settlement, SpendJournal
from gateway.access.keys import Team, VirtualKey
from gateway.access.keys_pg import database_errors, unavailable
from gateway.access.periods import Period, period_of
from gateway.access.spend_pg import SpendRecord, Versions, counters_of
from gateway.access.spend_writer import SpendWriter
from gateway.errors import ServiceUnavailable
from gateway.runtime.redis_errors import pool_exhausted, redis_errors, store_unavailable
from gateway.runtime.redis_scripts import Batch, Riders, ScriptBatch

__all__ = ["RecordedBudgets"]

log = logging.getLogger("gateway.budgets")


def _unreachable() -> tuple[type[BaseException], ...]:
    """Redis or the database unreachable."""
    return (*redis_errors(), ServiceUnavailable)


_COUNTER = """
local function create(s, spent, base, ttl)
  redis.call('HSET', s, 'spent', spent, 'base', base)
  local late = redis.call('HGETALL', s .. ':late')
  for j = 2, #late, 2 do
    local v, amount = string.match(late[j], '^(%d+):(%d+)$')
    if v and tonumber(v) > tonumber(base) then redis.call('HINCRBY', s, 'spent', amount) end
  end
  redis.call('DEL', s .. ':late')
  if tonumber(ttl) > 0 then redis.call('PEXPIRE', s, ttl) end
end
"""
# KEYS = (holds, held, spend) per scope; ARGV = hold id, amount, ttl ms, then per scope: budget ('' =
# none), rebuilt spent ('' = none), rebuilt version, spend ttl ms. Returns {0} when held; {scope
# index, spent, reserved} of the first scope that refuses; {-1, scope index...} for missing counters.
_RESERVE = LUA_LIB + _COUNTER + """
local now = now_ms()
local n = #KEYS / 3
local missing = {}
for i = 1, n do
  local at = 3 + 4 * (i - 1)
  if ARGV[at + 1] ~= '' and redis.call('EXISTS', KEYS[3 * i]) == 0 then
    if ARGV[at + 2] == '' then missing[#missing + 1] = i
    else create(KEYS[3 * i], ARGV[at + 2], ARGV[at + 3], ARGV[at + 4]) end
  end
end
if #missing > 0 then return {-1, unpack(missing)} end
for i = 1, n do
  local z, h, s = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  purge(z, h, now)
  local budget = ARGV[4 + 4 * (i - 1)]
  if budget ~= '' then
    local spent = redis.call('HGET', s, 'spent') or '0'
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
# KEYS = (holds, held, spend) per scope, then the settled mark; ARGV = hold id, actual, mark ttl ms,
# then per scope: rebuilt spent ('' = none), rebuilt version, spend ttl ms. Returns {1} when counted,
# {0} if that hold was already settled, {-1, scope index...} for missing counters (nothing done).
_SETTLE = LUA_LIB + _COUNTER + """
local n = (#KEYS - 1) / 3
local missing = {}
for i = 1, n do
  local at = 3 + 3 * (i - 1)
  if ARGV[2] ~= '0' and redis.call('EXISTS', KEYS[3 * i]) == 0 then
    if ARGV[at + 1] == '' then missing[#missing + 1] = i
    else create(KEYS[3 * i], ARGV[at + 1], ARGV[at + 2], ARGV[at + 3]) end
  end
end
if #missing > 0 then return {-1, unpack(missing)} end
if not redis.call('SET', KEYS[#KEYS], '1', 'NX', 'PX', ARGV[3]) then return {0} end
for i = 1, n do
  local z, h, s = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  drop(h, ARGV[1])
  redis.call('ZREM', z, ARGV[1])
  if ARGV[2] ~= '0' then
    redis.call('HINCRBY', s, 'spent', ARGV[2])
    redis.call('HSET', s, 'p:' .. ARGV[1], ARGV[2])
    local ttl = tonumber(ARGV[3 + 3 * i])
    if ttl > 0 then redis.call('PEXPIRE', s, ttl) else redis.call('PERSIST', s) end
  end
end
return {1}
"""
# KEYS = (holds, held, spend) per scope, then the settled mark; ARGV = hold id, actual ('0': only drop
# the holds), mark ttl ms, then per scope the batch version that committed it. Drops the holds and,
# once per settlement (the mark becomes '2'), counts the amount where a counter lost it.
_CONFIRM = LUA_LIB + """
local n = (#KEYS - 1) / 3
for i = 1, n do
  drop(KEYS[3 * i - 1], ARGV[1])
  redis.call('ZREM', KEYS[3 * i - 2], ARGV[1])
end
if ARGV[2] == '0' or redis.call('GET', KEYS[#KEYS]) == '2' then return 0 end
redis.call('SET', KEYS[#KEYS], '2', 'PX', ARGV[3])
for i = 1, n do
  local s = KEYS[3 * i]
  if redis.call('EXISTS', s) == 0 then
    -- missing now: whoever rebuilds it adds this if its read predates the batch (see create)
    redis.call('HSET', s .. ':late', ARGV[1], ARGV[3 + i] .. ':' .. ARGV[2])
    redis.call('PEXPIRE', s .. ':late', ARGV[3])
  elseif redis.call('HDEL', s, 'p:' .. ARGV[1]) == 0
     and tonumber(redis.call('HGET', s, 'base') or '0') < tonumber(ARGV[3 + i]) then
    redis.call('HINCRBY', s, 'spent', ARGV[2])
  end
end
return 1
"""
# KEYS = holds, held, spend of one scope; ARGV = rebuilt spent ('' = none), rebuilt version, spend ttl
# ms. Returns {spent, reserved}, or {-1} for a missing counter.
_SPEND = LUA_LIB + _COUNTER + """
purge(KEYS[1], KEYS[2], now_ms())
if redis.call('EXISTS', KEYS[3]) == 0 then
  if ARGV[1] == '' then return {-1} end
  create(KEYS[3], ARGV[1], ARGV[2], ARGV[3])
end
return {redis.call('HGET', KEYS[3], 'spent'), redis.call('HGET', KEYS[2], '#sum') or '0'}
"""
_ATTEMPTS = 3  # a counter rebuilt is used at once; only a period that turns meanwhile needs another


def _rebuilt_args(counters: list[Counter], rebuilt: dict[Counter, tuple[int, int]]) -> list[list[Any]]:
    return [[*rebuilt[c]] if c in rebuilt else ["", ""] for c in counters]


def _missing(result: Any, counters: list[Counter]) -> list[Counter] | None:
    """The counters a script reported missing, or None when it ran."""
    if isinstance(result, list) and result and result[0] == -1:
        return [counters[int(i) - 1] for i in result[1:]]
    return None


class RecordedBudgets:
    def __init__(self, redis: Any, record: SpendRecord, record_journal: SpendJournal, prefix: str = "gw", *,
                 journal: SpendJournal | None = None, fail_open: bool = False, spent_grace_s: int = 86400,
                 settled_ttl_s: int = 7 * 86400, writer: dict[str, Any] | None = None) -> None:
        self._redis = redis
        self._record = record
        self._prefix = f"{prefix}:{{gw-budget}}"
        self._holds = RedisBudgets(redis, prefix)  # the same holds: releasing is the same
        self._journal = journal  # confirmations that could not reach Redis
        self._fail_open = fail_open
        self._grace_ms = spent_grace_s * 1000
        self._settled_ms = settled_ttl_s * 1000
        self._reserve = redis.register_script(_RESERVE)
        self._settle = redis.register_script(_SETTLE)
        self._riders = Riders(redis)  # settlements ride with the next reservation
        self._confirm = redis.register_script(_CONFIRM)
        self._spend = redis.register_script(_SPEND)
        self.writer = SpendWriter(record, self.confirm, record_journal, **(writer or {}))
        self._reading: dict[Counter, asyncio.Future[tuple[int, int]]] = {}  # rebuild reads in flight

    def _keys(self, scope: str, period: Period, at: datetime) -> list[str]:
        p = self._prefix
        return [f"{p}:holds:{scope}", f"{p}:held:{scope}", f"{p}:spend:{scope}:{period_of(period, at)[0]}"]

    async def _rebuild(self, counters: list[Counter]) -> dict[Counter, tuple[int, int]]:
        """(spent, version) of each counter from the record; concurrent requests for one counter
        share one read (after a flush, every request in flight wants the same counters)."""
        reads = []
        for counter in counters:
            read = self._reading.get(counter)
            if read is None:
                read = self._reading[counter] = asyncio.ensure_future(self._read(counter))
                read.add_done_callback(functools.partial(self._read_done, counter))
            reads.append(read)
        try:
            values = [await asyncio.shield(read) for read in reads]
        except database_errors() as exc:
            raise unavailable(exc) from exc
        return dict(zip(counters, values, strict=True))

    def _read_done(self, counter: Counter, _: object) -> None:
        self._reading.pop(counter, None)

    async def _read(self, counter: Counter) -> tuple[int, int]:
        value = (await self._record.settled([counter]))[counter]
        log.info("budget counter %s %s rebuilt from the database: %d pico (version %d)", *counter, *value)
        return value

    def new_batch(self) -> Batch:
        return ScriptBatch(self._redis, self._riders)

    def queue_reserve(self, batch: Batch, key: VirtualKey, team: Team | None, amount_pico: int,
                      hold_ttl_s: float) -> Callable[[list[Any]], Hold]:
        return self._queue_reserve(batch, key, team, amount_pico, hold_ttl_s, {})

    def _queue_reserve(self, batch: Batch, key: VirtualKey, team: Team | None, amount_pico: int, hold_ttl_s: float,
                       rebuilt: dict[Counter, tuple[int, int]]) -> Callable[[list[Any]], Hold]:
        hold = new_hold(key, team, amount_pico)
        scopes = scopes_of(key, team)
        now = datetime.now(UTC)
        counters = [Counter(s.name, period_of(s.period, now)[0]) for s in scopes]
        keys = [k for s in scopes for k in self._keys(s.name, s.period, now)]
        args: list[Any] = [hold.id, amount_pico, max(int(hold_ttl_s * 1000), 1)]
        for scope, values in zip(scopes, _rebuilt_args(counters, rebuilt), strict=True):
            args += ["" if scope.budget is None else str(scope.budget), *values,
                     spent_ttl_ms(scope.period, now, self._grace_ms)]
        index = batch.add(self._reserve, keys, args)

        def finish(results: list[Any]) -> Hold:
            result = results[index]
            if isinstance(result, redis_errors()):
                if self._fail_open and not isinstance(result, pool_exhausted()):  # never while Redis answers
                    log.warning("budgets: Redis unavailable, admitting %s unchecked: %r", key.id, result)
                    return hold
                raise store_unavailable("budget store", result) from result
            if isinstance(result, Exception):
                raise result
            missing = _missing(result, counters)
            if missing is not None:
                raise CounterMissing(missing)
            if int(result[0]):
                scope: Scope = scopes[int(result[0]) - 1]
                raise refusal(scope, int(result[1]), int(result[2]), amount_pico)
            return hold

        return finish

    async def reserve(self, key: VirtualKey, team: Team | None, amount_pico: int, hold_ttl_s: float) -> Hold:
        """Hold, rebuilding from the record whatever counter Redis is missing."""
        rebuilt: dict[Counter, tuple[int, int]] = {}
        for _ in range(_ATTEMPTS):
            batch = self.new_batch()
            finish = self._queue_reserve(batch, key, team, amount_pico, hold_ttl_s, rebuilt)
            try:
                return finish(await batch.run())
            except CounterMissing as missing:
                try:
                    rebuilt.update(await self._rebuild(missing.counters))
                except ServiceUnavailable:
                    if not self._fail_open:
                        raise
                    log.warning("budgets: counters missing and the database unavailable, admitting %s unchecked",
                                key.id)
                    return new_hold(key, team, amount_pico)
        raise ServiceUnavailable("the budget store (Redis) keeps losing its counters; retry shortly")

    async def settle(self, hold: Hold, actual_pico: int, at: datetime | None = None) -> None:
        """Count the actual cost in Redis now (rebuilding a missing counter first) and queue it
        for the record; its confirmation follows the commit."""
        settlement = Settlement(hold, check_pico(actual_pico), at or datetime.now(UTC))
        counted = await self._count(settlement)
        if settlement.actual > 0 or not counted:
            self.writer.add(settlement)

    async def _count(self, settlement: Settlement) -> bool:
        """Run the settle script; False when it could not (Redis down, or a missing counter that
        the database cannot rebuild now): the confirmation will count it."""
        hold, at = settlement.hold, settlement.at
        counters = counters_of(settlement)
        keys = [k for scope, period in hold_scopes(hold) for k in self._keys(scope, period, at)]
        keys.append(f"{self._prefix}:settled:{hold.id}")
        ttls = [spent_ttl_ms(period, at, self._grace_ms) for _, period in hold_scopes(hold)]
        rebuilt: dict[Counter, tuple[int, int]] = {}
        for _ in range(_ATTEMPTS):
            args: list[Any] = [hold.id, settlement.actual, self._settled_ms]
            for values, ttl in zip(_rebuilt_args(counters, rebuilt), ttls, strict=True):
                args += [*values, ttl]
            try:
                missing = _missing(await self._riders.call(self._settle, keys, args), counters)
                if missing is None:
                    return True
                rebuilt.update(await self._rebuild(missing))
            except _unreachable() as exc:
                log.warning("budgets: settlement of %s not counted in Redis now, its confirmation will: %r",
                            hold.id, exc)
                return False
        return False

    async def confirm(self, committed: list[tuple[Settlement, Versions | None]]) -> None:
        """After a commit: drop the holds and count in Redis what it lost (the writer's callback).
        Journaled when Redis is unreachable, applied by `replay`."""
        try:
            await self._confirm_now(committed)
        except redis_errors() as exc:
            if self._journal is None:
                log.error("budgets: Redis unavailable, %d confirmation(s) LOST (no journal): %r", len(committed), exc)
                return
            for settlement, _ in committed:
                self._journal.append(settlement)
            log.warning("budgets: Redis unavailable, %d confirmation(s) journaled: %r", len(committed), exc)

    async def _confirm_now(self, committed: list[tuple[Settlement, Versions | None]]) -> None:
        if not committed:
            return
        batch = ScriptBatch(self._redis, self._riders)
        for settlement, versions in committed:
            hold = settlement.hold
            keys = [k for scope, period in hold_scopes(hold) for k in self._keys(scope, period, settlement.at)]
            keys.append(f"{self._prefix}:settled:{hold.id}")
            numbers = [versions.key, versions.team][:len(keys) // 3] if versions is not None else []
            counted = settlement.actual if versions is not None and None not in numbers else 0
            batch.add(self._confirm, keys, [hold.id, counted, self._settled_ms, *(n or 0 for n in numbers)])
        failed = next((r for r in await batch.run() if isinstance(r, Exception)), None)
        if failed is not None:
            raise failed

    async def _reconfirm(self, settlement: Settlement) -> bool:
        """A journaled confirmation: with the versions its commit got (none yet: the record's
        side confirms it after committing)."""
        versions = (await self._record.versions([settlement.hold.id])).get(settlement.hold.id)
        if versions is None and settlement.actual > 0:
            return False
        await self._confirm_now([(settlement, versions)])
        return True

    async def replay(self) -> int:
        """Commit what the record's journal keeps, then apply the journaled confirmations; how many."""
        done = await self.writer.replay()
        if self._journal is not None:
            try:
                done += await self._journal.replay(self._reconfirm)
            except database_errors() as exc:
                log.debug("journaled confirmations deferred: %r", exc)
        return done

    def backlog(self) -> tuple[int, int]:
        return self.writer.backlog()

    async def release(self, hold: Hold) -> None:
        await self._holds.release(hold)

    async def spend(self, key: VirtualKey) -> Spend:
        return await self._report(scopes_of(key, None)[0])

    async def team_spend(self, team: Team) -> Spend:
        return await self._report(Scope(f"team:{team.name}", team.budget_period, team.budget_pico, team.name))

    async def _report(self, scope: Scope) -> Spend:
        now = datetime.now(UTC)
        counter = Counter(scope.name, period_of(scope.period, now)[0])
        ttl = spent_ttl_ms(scope.period, now, self._grace_ms)
        rebuilt: dict[Counter, tuple[int, int]] = {}
        for _ in range(_ATTEMPTS):
            result = await self._spend(keys=self._keys(scope.name, scope.period, now),
                                       args=[*_rebuilt_args([counter], rebuilt)[0], ttl])
            if _missing(result, [counter]) is None:
                return make_spend(int(result[0]), int(result[1]), scope.budget, scope.period, now)
            rebuilt.update(await self._rebuild([counter]))
        raise ServiceUnavailable("the budget store (Redis) keeps losing its counters; retry shortly")

    async def run(self) -> None:
        await self.writer.run()

    def stop(self) -> None:
        self.writer.stop()

    async def flush(self) -> None:
        """Commit (and confirm) every settlement queued so far."""
        await self.writer.flush()

