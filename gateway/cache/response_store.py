"""Where cached responses live: Redis when configured (shared by every replica), else an
in-process LRU. Every entry expires; the memory store is bounded in bytes. A Redis failure is
raised as `CacheUnavailable` so the caller can bypass the cache and keep serving. With Redis, a
`StoredKeys` (cache_presence.py) knows which entries exist, so a miss needs no GET."""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any, Protocol

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

    async def run(self) -> None:
        return None


class RedisCacheStore:
    def __init__(self, redis: Any, prefix: str, ttl_s: float = 3600, max_known_keys: int = 200_000) -> None:
        self._redis = redis
        self._prefix = f"{prefix}:rc:"
        self.presence = StoredKeys(redis, self._prefix, ttl_s, max_known_keys)

    async def get(self, key: str) -> bytes | None:
        if not self.presence.may_exist(key):
            return None
        try:
            value = await self._redis.get(self._prefix + key)
        except redis_errors() as exc:
            raise CacheUnavailable(repr(exc)) from exc
        return bytes(value) if value is not None else None

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        ttl_ms = max(int(ttl_s * 1000), 1)
        pipe = self._redis.pipeline(transaction=False)
        pipe.set(self._prefix + key, value, px=ttl_ms)
        pipe.publish(self.presence.channel, self.presence.announcement(key, ttl_ms))
        try:
            await pipe.execute()
        except redis_errors() as exc:
            raise CacheUnavailable(repr(exc)) from exc
        self.presence.note(key, ttl_ms / 1000)

    async def run(self) -> None:
        await self.presence.run()
