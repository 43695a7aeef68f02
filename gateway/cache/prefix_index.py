"""Which prompt prefixes are warm at which model: per model, the block hashes sent there and
until when the provider should still hold them (the provider's cache lifetime).

Every record of a prompt writes all its blocks with one expiry, so along a chain the expiry
never increases: the warm blocks of a prompt are always a leading run, found by binary search.
Evicting the soonest-expiring entries first keeps that true. In Redis, one sorted set per
model (member: block hash, score: expiry in ms) under one `{gw-prefix}` hash tag, so a lookup
for every candidate is one Lua call on one Cluster slot; every set has a TTL and a size cap.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.cache.response_store import CacheUnavailable
from gateway.runtime.redis_errors import redis_errors

__all__ = ["MemoryPrefixIndex", "PrefixIndex", "RedisPrefixIndex", "Warmth"]


@dataclass(frozen=True, slots=True)
class Warmth:
    blocks: int  # leading blocks of the prompt still warm at the model
    marked: bool  # the marker (an Anthropic breakpoint's prefix) was written there


class PrefixIndex(Protocol):
    async def lookup(self, models: Sequence[str], hashes: Sequence[bytes], marker: bytes) -> dict[str, Warmth]: ...

    async def record(self, model: str, hashes: Sequence[bytes], marker: bytes, ttl_s: float) -> None: ...


def _leading(hashes: Sequence[bytes], warm: Any) -> int:
    if not hashes or not warm(hashes[0]):
        return 0  # the common case: a model that never saw this prompt
    if warm(hashes[-1]):
        return len(hashes)  # a prompt resent as is
    lo, hi = 1, len(hashes) - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if warm(hashes[mid - 1]):
            lo = mid
        else:
            hi = mid - 1
    return lo


class MemoryPrefixIndex:
    """One process's index; at most `max_entries` hashes per name (a tenant's model), and at
    most `max_names` names (the least recently written go first)."""

    def __init__(self, max_entries: int, max_names: int = 4096) -> None:
        self._models: dict[str, dict[bytes, float]] = {}
        self._max = max_entries
        self._max_names = max_names

    async def lookup(self, models: Sequence[str], hashes: Sequence[bytes], marker: bytes) -> dict[str, Warmth]:
        now = time.monotonic()
        out = {}
        for model in models:
            entries = self._models.get(model, {})

            def warm(h: bytes, entries: dict[bytes, float] = entries) -> bool:
                return entries.get(h, 0.0) > now

            out[model] = Warmth(_leading(hashes, warm), bool(marker) and warm(marker))
        return out

    async def record(self, model: str, hashes: Sequence[bytes], marker: bytes, ttl_s: float) -> None:
        entries = self._models.pop(model, None) or {}
        self._models[model] = entries  # the most recently written name last
        while len(self._models) > self._max_names:
            del self._models[next(iter(self._models))]
        expiry = time.monotonic() + ttl_s
        # Re-insert, the chain's tail first: dict order is then eviction order, oldest records
        # first and, within a record, its last blocks first, so the warm blocks stay a leading run.
        for h in ([marker] if marker else []) + list(reversed(hashes)):
            entries.pop(h, None)
            entries[h] = expiry
        while len(entries) > self._max:
            del entries[next(iter(entries))]


# KEYS: one sorted set per model. ARGV[1] = now ms, ARGV[2] = marker ('' for none), ARGV[3] = the
# hashes, concatenated (16 bytes each: one argument is far cheaper for the client to send).
# Returns, per key, the number of leading warm hashes and 1/0 for the marker.
_LOOKUP = """
local now = tonumber(ARGV[1])
local all = ARGV[3]
local n = #all / 16
local out = {}
local function warm(k, i)
  local s = redis.call('ZSCORE', KEYS[k], string.sub(all, i * 16 - 15, i * 16))
  return s and tonumber(s) > now
end
for k = 1, #KEYS do
  local lo, hi = 0, n
  if n == 0 or not warm(k, 1) then hi = 0          -- never saw this prompt: one look
  elseif warm(k, n) then lo = n                     -- resent as is: two looks
  else lo, hi = 1, n - 1 end
  while lo < hi do
    local mid = math.floor((lo + hi + 1) / 2)
    if warm(k, mid) then lo = mid else hi = mid - 1 end
  end
  local marked = 0
  if ARGV[2] ~= '' then
    local s = redis.call('ZSCORE', KEYS[k], ARGV[2])
    if s and tonumber(s) > now then marked = 1 end
  end
  out[#out + 1] = lo
  out[#out + 1] = marked
end
return out
"""
# KEYS[1] = the model's set. ARGV[1] = expiry ms, ARGV[2] = now ms, ARGV[3] = max entries,
# ARGV[4] = key TTL ms, ARGV[5..] = hashes in chain order (and marker). Each next hash expires
# 1 us earlier, so eviction by score takes a chain's tail first and warm blocks stay a leading run.
_RECORD = """
local args = {}
local expiry = tonumber(ARGV[1])
for i = 5, #ARGV do
  args[#args + 1] = string.format('%.3f', expiry - (i - 5) * 0.001)
  args[#args + 1] = ARGV[i]
  if #args >= 1000 then redis.call('ZADD', KEYS[1], unpack(args)); args = {} end
end
if #args > 0 then redis.call('ZADD', KEYS[1], unpack(args)) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
local extra = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[3])
if extra > 0 then redis.call('ZREMRANGEBYRANK', KEYS[1], 0, extra - 1) end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 0
"""


class RedisPrefixIndex:
    """Shared by every process and replica. Failures raise `CacheUnavailable`."""

    def __init__(self, redis: Any, prefix: str, max_entries: int) -> None:
        self._prefix = f"{prefix}:{{gw-prefix}}:"
        self._lookup = redis.register_script(_LOOKUP)
        self._record = redis.register_script(_RECORD)
        self._max = max_entries

    async def lookup(self, models: Sequence[str], hashes: Sequence[bytes], marker: bytes) -> dict[str, Warmth]:
        now_ms = int(time.time() * 1000)
        try:
            raw = await self._lookup(keys=[self._prefix + m for m in models], args=[now_ms, marker, b"".join(hashes)])
        except redis_errors() as exc:
            raise CacheUnavailable(repr(exc)) from exc
        return {m: Warmth(int(raw[2 * i]), bool(raw[2 * i + 1])) for i, m in enumerate(models)}

    async def record(self, model: str, hashes: Sequence[bytes], marker: bytes, ttl_s: float) -> None:
        now_ms = int(time.time() * 1000)
        ttl_ms = max(int(ttl_s * 1000), 1)
        members = [*hashes, marker] if marker else list(hashes)
        try:
            await self._record(keys=[self._prefix + model], args=[now_ms + ttl_ms, now_ms, self._max, ttl_ms, *members])
        except redis_errors() as exc:
            raise CacheUnavailable(repr(exc)) from exc
