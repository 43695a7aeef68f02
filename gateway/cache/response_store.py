"""Where cached responses live: Redis when configured (shared by every replica), else an
in-process LRU. Every entry expires, and both stores are bounded in bytes (`max_memory_bytes`).
A Redis failure is raised as `CacheUnavailable` so the caller can bypass the cache and keep
serving. With Redis, a `StoredKeys` (response_presence.py) knows which entries exist, so a miss
needs no GET.

In Redis the bound is kept by the gateway itself, across every replica, in the one Lua script
that stores an entry (one round trip, as a plain SET was): a sorted set of the entries by
expiry and a hash of what each is charged (`redis_sizes.entry_charge`, its value and Redis's
overhead) make room for a new entry by deleting the oldest ones first, so the entries never
hold more than the bound, whatever Redis's own `maxmemory` and policy. Reads are plain GETs.
Everything it touches carries the `{gw-rc}` hash tag: one Cluster slot.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any, Protocol

from gateway.cache.redis_sizes import entry_charge
from gateway.cache.response_presence import StoredKeys
from gateway.runtime.redis_errors import redis_errors

__all__ = ["CacheStore", "CacheUnavailable", "MemoryCacheStore", "RedisCacheStore"]


class CacheUnavailable(Exception):
    pass


class CacheStore(Protocol):
    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl_s: float) -> None: ...

    async def run(self) -> None:
        """Background upkeep for as long as the app runs (returns at once if there is none)."""

    async def bytes_charged(self) -> int:
        """What the store holds now, as its byte bound (`max_memory_bytes`) counts it."""
        ...

    async def close(self) -> None:
        """At shutdown, after the last write: close a Redis client of the store's own."""


class MemoryCacheStore:
    def __init__(self, max_bytes: int) -> None:
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._bytes = 0
        self._max = max_bytes

    async def get(self, key: str) -> bytes | None:
        found = self._entries.get(key)
        if found is None:
            return None
        expires, value = found
        if expires <= time.monotonic():
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return value

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        if len(value) > self._max:
            return
        if key in self._entries:
            self._drop(key)
        self._entries[key] = (time.monotonic() + ttl_s, value)
        self._bytes += len(value)
        while self._bytes > self._max:
            self._drop(next(iter(self._entries)))  # least recently used first

    def _drop(self, key: str) -> None:
        _, value = self._entries.pop(key)
        self._bytes -= len(value)

    async def bytes_charged(self) -> int:
        return self._bytes

    async def run(self) -> None:
        return None

    async def close(self) -> None:
        return None


# KEYS[1] = the entry, KEYS[2] = the entries by expiry (ms), KEYS[3] = what each is charged, KEYS[4] =
# the total charged. ARGV[1] = the value, ARGV[2] = TTL ms, ARGV[3] = its charge, ARGV[4] = the bound,
# ARGV[5] = the entry's key, ARGV[6] = the entries' name prefix, ARGV[7] = the announcement channel.
# Every entry the index drops is deleted with it, so the entries never hold more than it counts.
_WRITE = """
local order, sizes, key = KEYS[2], KEYS[3], ARGV[5]
local ttl, charge, bound = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
if charge > bound then return -1 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local total = tonumber(redis.call('GET', KEYS[4]) or '-1')
if total < 0 then  -- the first write, or the total was lost: count again
  total = 0
  for _, v in ipairs(redis.call('HVALS', sizes)) do total = total + tonumber(v) end
end
local function drop(k)
  total = total - tonumber(redis.call('HGET', sizes, k) or '0')
  redis.call('HDEL', sizes, k)
  redis.call('ZREM', order, k)
  redis.call('DEL', ARGV[6] .. k)
end
if redis.call('HEXISTS', sizes, key) == 1 then drop(key) end  -- replaced
for _, k in ipairs(redis.call('ZRANGEBYSCORE', order, '-inf', now, 'LIMIT', 0, 16)) do drop(k) end  -- expired
local evicted = {}
while total + charge > bound do  -- the oldest go first
  local oldest = redis.call('ZRANGE', order, 0, 0)[1]
  if not oldest then total = 0; break end
  drop(oldest)
  evicted[#evicted + 1] = oldest
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
redis.call('ZADD', order, now + ttl, key)
redis.call('HSET', sizes, key, charge)
redis.call('SET', KEYS[4], total + charge)
for i = 2, 4 do redis.call('PEXPIRE', KEYS[i], ttl) end  -- the bookkeeping outlives no entry
redis.call('PUBLISH', ARGV[7], key .. ' ' .. ARGV[2])
for _, k in ipairs(evicted) do redis.call('PUBLISH', ARGV[7], k .. ' 0') end
return #evicted
"""


class RedisCacheStore:
    """Entries are `<prefix>:rc:{gw-rc}:<key>`; the bound's bookkeeping is `<prefix>:{gw-rc}:order`,
    `:sizes` and `:bytes`; stores (and evictions, as `<key> 0`) are announced on `<prefix>:rc:stored`.
    `owns_client`: the client is the store's own (`cache.redis_url`), closed by `close()`."""

    def __init__(self, redis: Any, prefix: str, ttl_s: float = 3600, max_known_keys: int = 200_000,
                 max_bytes: int = 64 << 20, owns_client: bool = False) -> None:
        self._redis = redis
        self.key_prefix = f"{prefix}:rc:{{gw-rc}}:"
        self._bookkeeping = [f"{prefix}:{{gw-rc}}:{part}" for part in ("order", "sizes", "bytes")]
        self.presence = StoredKeys(redis, self.key_prefix, ttl_s, max_known_keys, channel=f"{prefix}:rc:stored")
        self._write = redis.register_script(_WRITE)
        self.max_bytes = max_bytes
        self._owns_client = owns_client

    async def get(self, key: str) -> bytes | None:
        if not self.presence.may_exist(key):
            return None
        try:
            value = await self._redis.get(self.key_prefix + key)
        except redis_errors() as exc:
            raise CacheUnavailable(repr(exc)) from exc
        return bytes(value) if value is not None else None

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        charge = entry_charge(key, value)
        if charge > self.max_bytes:
            return  # larger than the whole cache
        ttl_ms = max(int(ttl_s * 1000), 1)
        args = [value, ttl_ms, charge, self.max_bytes, key, self.key_prefix, self.presence.channel]
        try:
            await self._write(keys=[self.key_prefix + key, *self._bookkeeping], args=args)
        except redis_errors() as exc:
            raise CacheUnavailable(repr(exc)) from exc
        self.presence.note(key, ttl_ms / 1000)

    async def bytes_charged(self) -> int:
        """What the entries in Redis are charged against the bound now (for tests and operators)."""
        try:
            return int(await self._redis.get(self._bookkeeping[2]) or 0)
        except redis_errors() as exc:
            raise CacheUnavailable(repr(exc)) from exc

    async def run(self) -> None:
        await self.presence.run()

    async def close(self) -> None:
        if self._owns_client:
            await self._redis.aclose()
