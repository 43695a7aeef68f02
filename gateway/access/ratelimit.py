"""Per-key RPM and TPM limits (GCRA), shared by every process with `RedisRateLimiter`.

Each limit is a bucket of `limit` units refilled continuously at `limit` per minute (the GCRA
form: one "theoretical arrival time" per key and limit, no per-request log): a key may burst up
to its limit at once, and over any long interval it averages at most its limit per minute. A
request costs 1 request and its estimated tokens (input + max_tokens, or a default): both
limits are checked and charged together, or neither. `correct` charges (or refunds) the
difference once the actual token count is known.

A refused request gets RateLimitExceeded (429) with `retry-after`: the time until both buckets
have room. A request whose tokens alone exceed the key's TPM could never pass, so it is refused
at once (with retry-after 60).

Rate limits protect upstreams; they are not money. If Redis is down, requests are admitted
(logged), unlike budgets.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.access.keys import VirtualKey
from gateway.errors import RateLimitExceeded
from gateway.runtime.redis_errors import pool_exhausted, redis_errors, store_unavailable
from gateway.runtime.redis_scripts import Batch, ScriptBatch

__all__ = ["Admission", "MemoryRateLimiter", "RateLimiter", "RedisRateLimiter"]

log = logging.getLogger("gateway.ratelimit")
_WINDOW_MS = 60_000.0
# A wait of at most this (ms) is rounding, not a limit: clock readings near a power of two in ms
# round `now + spacing` by up to a few hundred picoseconds, and Redis keeps arrival times to the
# microsecond. Without it a full bucket's request could be refused with "retry in 0.00 s".
_ROUNDING_MS = 0.001


@dataclass(frozen=True, slots=True)
class Admission:
    key_id: str
    tpm: int | None  # the limit in force at admission
    tokens: int  # tokens charged against it


class RateLimiter(Protocol):
    def queue_admit(self, batch: Batch, key: VirtualKey, tokens: int) -> Callable[[list[Any]], Admission]:
        """Queue charging one request and `tokens` tokens in `batch` (to share a round trip); the
        returned function turns the batch's results into the Admission, or raises
        RateLimitExceeded (nothing charged)."""
        ...

    async def admit(self, key: VirtualKey, tokens: int) -> Admission:
        """Charge one request and `tokens` tokens, or raise RateLimitExceeded (nothing charged)."""
        ...

    async def correct(self, admission: Admission, actual_tokens: int) -> None:
        """Charge or refund the difference between the actual and the estimated tokens."""
        ...


def _too_big(key: VirtualKey, tokens: int) -> RateLimitExceeded | None:
    """The refusal of a request no minute could admit, if it is one."""
    if key.tpm is None or tokens <= key.tpm:
        return None
    return RateLimitExceeded(
        f"This request may use up to {tokens} tokens, more than the {key.tpm} tokens per minute allowed "
        f"for key {key.id}; lower max_tokens or the prompt.",
        retry_after_s=60,
    )


def _refused(key: VirtualKey, wait_ms: float) -> RateLimitExceeded:
    return RateLimitExceeded(
        f"Rate limit reached for key {key.id} (rpm {key.rpm}, tpm {key.tpm}); retry in {wait_ms / 1000:.2f} s.",
        retry_after_s=wait_ms / 1000,
    )


def _step(tat: float, now: float, limit: int, cost: int) -> tuple[float, float]:
    """GCRA: (new arrival time, ms to wait; <= 0 means allowed now)."""
    new_tat = max(tat, now) + cost * _WINDOW_MS / limit
    return new_tat, new_tat - now - _WINDOW_MS


class MemoryRateLimiter:
    """One process's limits (no Redis)."""

    def __init__(self) -> None:
        self._tat: dict[tuple[str, str], float] = {}

    def queue_admit(self, batch: Batch, key: VirtualKey, tokens: int) -> Callable[[list[Any]], Admission]:
        """Nothing to send: the admission is made when the batch's results are read."""
        return lambda _: self._admit(key, tokens)

    async def admit(self, key: VirtualKey, tokens: int) -> Admission:
        return self._admit(key, tokens)

    def _admit(self, key: VirtualKey, tokens: int) -> Admission:
        too_big = _too_big(key, tokens)
        if too_big is not None:
            raise too_big
        now = time.monotonic() * 1000
        steps = {}
        for kind, limit, cost in (("rpm", key.rpm, 1), ("tpm", key.tpm, tokens)):
            if limit is not None:
                steps[kind] = _step(self._tat.get((key.id, kind), now), now, limit, cost)
        wait = max((w for _, w in steps.values()), default=0.0)
        if wait > _ROUNDING_MS:
            raise _refused(key, wait)
        if len(self._tat) > 100_000:
            self._tat = {k: t for k, t in self._tat.items() if t > now}
        for kind, (tat, _) in steps.items():
            self._tat[(key.id, kind)] = tat
        return Admission(key.id, key.tpm, tokens)

    async def correct(self, admission: Admission, actual_tokens: int) -> None:
        if admission.tpm is None or actual_tokens == admission.tokens:
            return
        now = time.monotonic() * 1000
        slot = (admission.key_id, "tpm")
        tat = max(self._tat.get(slot, now), now) + (actual_tokens - admission.tokens) * _WINDOW_MS / admission.tpm
        self._tat[slot] = max(tat, now)


_LIB = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local function tat_of(k)
  local tat = tonumber(redis.call('GET', k) or '0')
  if tat < now then return now end
  return tat
end
local function store(k, tat)
  redis.call('SET', k, string.format('%.3f', tat), 'PX', math.ceil(tat - now) + 1000)
end
"""
# KEYS = rpm state, tpm state; ARGV = rpm limit, tpm limit ('' = none), tokens.
# Returns '0' when admitted, else the ms to wait.
_ADMIT = _LIB + """
local wait = 0
local new = {}
for i = 1, 2 do
  if ARGV[i] ~= '' then
    local cost = 1
    if i == 2 then cost = tonumber(ARGV[3]) end
    new[i] = tat_of(KEYS[i]) + cost * 60000 / tonumber(ARGV[i])
    wait = math.max(wait, new[i] - now - 60000)
  end
end
if wait > 0.001 then return string.format('%.3f', wait) end  -- _ROUNDING_MS
for i = 1, 2 do
  if new[i] then store(KEYS[i], new[i]) end
end
return '0'
"""
# KEYS = tpm state; ARGV = tpm limit, token difference (may be negative).
_CORRECT = _LIB + """
store(KEYS[1], math.max(tat_of(KEYS[1]) + tonumber(ARGV[2]) * 60000 / tonumber(ARGV[1]), now))
return 1
"""


class RedisRateLimiter:
    """Limits shared through Redis; each key's state sits under its own `{gw-rl:<id>}` hash tag
    (keys spread over a Cluster) and expires once its bucket is full again."""

    def __init__(self, redis: Any, prefix: str = "gw", batch_s: float = 0.5) -> None:
        self._redis = redis
        self._prefix = prefix
        self._admit = redis.register_script(_ADMIT)
        self._correct = redis.register_script(_CORRECT)
        self._batch_s = batch_s
        self._pending: dict[tuple[str, int], int] = {}  # (key id, tpm) -> token difference not yet written
        self._flush: asyncio.Task[None] | None = None

    def _keys(self, key_id: str) -> list[str]:
        return [f"{self._prefix}:{{gw-rl:{key_id}}}:rpm", f"{self._prefix}:{{gw-rl:{key_id}}}:tpm"]

    async def admit(self, key: VirtualKey, tokens: int) -> Admission:
        if key.rpm is None and key.tpm is None:
            return Admission(key.id, key.tpm, tokens)
        batch = ScriptBatch(self._redis)
        finish = self.queue_admit(batch, key, tokens)
        return finish(await batch.run())

    def queue_admit(self, batch: Batch, key: VirtualKey, tokens: int) -> Callable[[list[Any]], Admission]:
        admission = Admission(key.id, key.tpm, tokens)
        too_big = _too_big(key, tokens)
        if too_big is not None:  # refused like any other admission: through the finisher

            def refuse(results: list[Any]) -> Admission:
                raise too_big

            return refuse
        args = ["" if key.rpm is None else key.rpm, "" if key.tpm is None else key.tpm, tokens]
        index = batch.add(self._admit, self._keys(key.id), args)

        def finish(results: list[Any]) -> Admission:
            result = results[index]
            if isinstance(result, pool_exhausted()):  # Redis answers: the limit still applies
                raise store_unavailable("rate limiter", result) from result
            if isinstance(result, redis_errors()):
                log.warning("rate limits: Redis unavailable, admitting %s: %r", key.id, result)
                return admission
            if isinstance(result, Exception):
                raise result
            wait = float(result)
            if wait > 0:
                raise _refused(key, wait)
            return admission

        return finish

    async def correct(self, admission: Admission, actual_tokens: int) -> None:
        """Corrections are summed per key and written every `batch_s` in one pipeline (a refund
        reaches the bucket up to `batch_s` late)."""
        if admission.tpm is None or actual_tokens == admission.tokens:
            return
        slot = (admission.key_id, admission.tpm)
        self._pending[slot] = self._pending.get(slot, 0) + actual_tokens - admission.tokens
        if not self._batch_s:
            await self._write()
        elif self._flush is None or self._flush.done():
            self._flush = asyncio.get_running_loop().create_task(self._write())

    async def _write(self) -> None:
        if self._batch_s:
            await asyncio.sleep(self._batch_s)
        batch, self._pending = self._pending, {}
        try:
            pipe = self._redis.pipeline(transaction=False)
            for (key_id, tpm), difference in batch.items():
                if difference:
                    await self._correct(keys=self._keys(key_id)[1:], args=[tpm, difference], client=pipe)
            await pipe.execute()
        except redis_errors() as exc:
            log.warning("rate limits: could not write token corrections: %r", exc)
