"""Which prompt prefixes are warm at which model: per model, the block hashes sent there and
until when the provider should still hold them (the provider's cache lifetime).

Every record of a prompt writes all its blocks with one expiry, so along a chain the expiry
never increases: the warm blocks of a prompt are always a leading run, found by binary search.
Evicting the soonest-expiring entries first keeps that true. In Redis, one sorted set per
model (member: block hash, score: expiry in ms) under one `{gw-prefix}` hash tag, so a lookup
for every candidate is one Lua call on one Cluster slot; every set has a TTL and a size cap.

The whole index is bounded in bytes (`max_memory_bytes`, charged per set by
`redis_sizes.prefix_set_charge`), in memory and in Redis alike: a record that would pass the bound
first drops the least recently written sets (another tenant's or model's prompts), and if its
own set alone is too large, that set's soonest-expiring entries. In Redis the same script that
records does it, so it holds across replicas at no extra round trip.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.cache.redis_sizes import PREFIX_MEMBER_BYTES, prefix_set_charge
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

    async def bytes_charged(self) -> int:
        """What the index holds now, as its byte bound (`max_memory_bytes`) counts it."""
        ...

    async def close(self) -> None:
        """At shutdown, after the last record: close a Redis client of the index's own."""


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
    """One process's index; at most `max_entries` hashes per name (a tenant's model), at most
    `max_names` names and `max_bytes` in all (the least recently written names go first)."""

    def __init__(self, max_entries: int, max_names: int = 4096, max_bytes: int = 64 << 20) -> None:
        self._models: dict[str, dict[bytes, float]] = {}
        self._max = max_entries
        self._max_names = max_names
        self._max_bytes = max_bytes
        self._bytes = 0  # prefix_set_charge summed over the names held

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
        entries = self._drop(model) or {}
        self._models[model] = entries  # the most recently written name last
        while len(self._models) > self._max_names:
            self._drop(next(iter(self._models)))
        expiry = time.monotonic() + ttl_s
        # Re-insert, the chain's tail first: dict order is then eviction order, oldest records
        # first and, within a record, its last blocks first, so the warm blocks stay a leading run.
        for h in ([marker] if marker else []) + list(reversed(hashes)):
            entries.pop(h, None)
            entries[h] = expiry
        while len(entries) > self._max:
            del entries[next(iter(entries))]
        while self._bytes + prefix_set_charge(model, len(entries)) > self._max_bytes:
            oldest = next(iter(self._models))
            if oldest != model:
                self._drop(oldest)
            elif entries:
                del entries[next(iter(entries))]  # alone and still too large: its oldest entries
            else:
                del self._models[model]
                return
        self._bytes += prefix_set_charge(model, len(entries))

    def _drop(self, name: str) -> dict[bytes, float] | None:
        entries = self._models.pop(name, None)
        if entries is not None:
            self._bytes -= prefix_set_charge(name, len(entries))
        return entries

    async def bytes_charged(self) -> int:
        """What the index holds, charged against its bound."""
        return self._bytes

    async def close(self) -> None:
        return None


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
# KEYS[1] = the model's set, KEYS[2] = every set by its last expiry, KEYS[3] = what each set is
# charged, KEYS[4] = the total charged. ARGV[1] = expiry ms, ARGV[2] = now ms, ARGV[3] = max entries,
# ARGV[4] = key TTL ms, ARGV[5] = the bound in bytes, ARGV[6] = bytes per entry, ARGV[7] = bytes per
# set, ARGV[8..] = hashes in chain order (and marker). Each next hash expires 1 us earlier, so
# eviction by score takes a chain's tail first and warm blocks stay a leading run.
_RECORD = """
local set, sets, sizes = KEYS[1], KEYS[2], KEYS[3]
local args = {}
local expiry = tonumber(ARGV[1])
for i = 8, #ARGV do
  args[#args + 1] = string.format('%.3f', expiry - (i - 8) * 0.001)
  args[#args + 1] = ARGV[i]
  if #args >= 1000 then redis.call('ZADD', set, unpack(args)); args = {} end
end
if #args > 0 then redis.call('ZADD', set, unpack(args)) end
redis.call('ZREMRANGEBYSCORE', set, '-inf', ARGV[2])
local extra = redis.call('ZCARD', set) - tonumber(ARGV[3])
if extra > 0 then redis.call('ZREMRANGEBYRANK', set, 0, extra - 1) end
redis.call('PEXPIRE', set, ARGV[4])
local bound, member, fixed = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local total = tonumber(redis.call('GET', KEYS[4]) or '-1')
if total < 0 then  -- the first record, or the total was lost: count again
  total = 0
  for _, v in ipairs(redis.call('HVALS', sizes)) do total = total + tonumber(v) end
end
local function drop(name)
  total = total - tonumber(redis.call('HGET', sizes, name) or '0')
  redis.call('HDEL', sizes, name)
  redis.call('ZREM', sets, name)
  if name ~= set then redis.call('DEL', name) end
end
drop(set)  -- charged again below, as it is now
for _, name in ipairs(redis.call('ZRANGEBYSCORE', sets, '-inf', ARGV[2], 'LIMIT', 0, 16)) do drop(name) end
local card = redis.call('ZCARD', set)
while total + card * member + fixed > bound do  -- the least recently written sets go first
  local oldest = redis.call('ZRANGE', sets, 0, 0)[1]
  if not oldest then  -- alone and still too large: its soonest-expiring entries go
    total = 0
    local keep = math.max(math.floor((bound - fixed) / member), 0)
    if keep < card then redis.call('ZREMRANGEBYRANK', set, 0, card - keep - 1); card = keep end
    break
  end
  drop(oldest)
end
if card > 0 then
  redis.call('HSET', sizes, set, card * member + fixed)
  redis.call('ZADD', sets, expiry, set)
  total = total + card * member + fixed
end
redis.call('SET', KEYS[4], total)
for i = 2, 4 do redis.call('PEXPIRE', KEYS[i], ARGV[4]) end  -- the bookkeeping outlives no set
return 0
"""


class RedisPrefixIndex:
    """Shared by every process and replica. Failures raise `CacheUnavailable`. `owns_client`: the
    client is the index's own (`cache.redis_url`), closed by `close()`."""

    def __init__(self, redis: Any, prefix: str, max_entries: int, max_bytes: int = 64 << 20,
                 owns_client: bool = False) -> None:
        self._redis = redis
        self._prefix = f"{prefix}:{{gw-prefix}}:"
        self._bookkeeping = [f"{prefix}:{{gw-prefix}}@{part}" for part in ("sets", "sizes", "bytes")]
        self._lookup = redis.register_script(_LOOKUP)
        self._record = redis.register_script(_RECORD)
        self._max = max_entries
        self.max_bytes = max_bytes
        self._owns_client = owns_client

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
        name = self._prefix + model
        args = [now_ms + ttl_ms, now_ms, self._max, ttl_ms, self.max_bytes, PREFIX_MEMBER_BYTES,
                prefix_set_charge(name, 0), *members]
        try:
            await self._record(keys=[name, *self._bookkeeping], args=args)
        except redis_errors() as exc:
            raise CacheUnavailable(repr(exc)) from exc

    async def bytes_charged(self) -> int:
        """What the index's sets in Redis are charged against the bound now."""
        try:
            return int(await self._redis.get(self._bookkeeping[2]) or 0)
        except redis_errors() as exc:
            raise CacheUnavailable(repr(exc)) from exc

    async def close(self) -> None:
        if self._owns_client:
            await self._redis.aclose()
