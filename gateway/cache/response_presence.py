"""Which response-cache entries exist in Redis, known in this process, so that a miss costs no
Redis round trip (a GET that finds nothing was most of what the Redis cache added to a miss).

Every store publishes `<key> <ttl ms>` on `<prefix>:rc:stored` in the same script as its SET (and,
for each entry it evicted to keep the cache's byte bound, `<key> 0`). Each replica subscribes to
that channel and, each time its subscription is (re)established, re-reads the existing entries
with SCAN; only then does it answer "not there" without asking Redis. Until then, whenever the
subscription is down, and once more than `max_keys` entries are live (until a SCAN, tried every
`rescan_when_full_s`, finds fewer), `may_exist` says True and the cache reads Redis as before.

What it can get wrong, and what that costs:
  * an entry stored by another replica less than a publish ago looks absent: one more upstream
    call, answered correctly (an answer is only ever served after a real GET);
  * an entry Redis itself evicted early (maxmemory) looks present: the GET finds nothing, as
    before (entries the gateway evicts for its own bound are announced, and forgotten).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Any

from gateway.runtime.redis_errors import redis_errors

__all__ = ["StoredKeys"]

log = logging.getLogger("gateway.cache")
_GLOB = re.compile(r"([*?\[\]\\])")


class StoredKeys:
    def __init__(
        self, redis: Any, key_prefix: str, ttl_s: float, max_keys: int, rescan_when_full_s: float = 30,
        channel: str | None = None,
    ) -> None:
        self._redis = redis
        self._key_prefix = key_prefix  # e.g. "gw:rc:{gw-rc}:"; an entry is key_prefix + its key
        self.channel = channel or key_prefix + "stored"
        self._ttl_s = ttl_s  # an entry found by SCAN lives at most this long
        self._max = max_keys
        self._expiry: dict[str, float] = {}  # key -> monotonic time it expires
        self._synced = False
        self._full = False  # over max_keys: announcements are ignored until the next SCAN
        self._rescan_when_full_s = rescan_when_full_s
        self._scanned_at = 0.0

    @property
    def synced(self) -> bool:
        return self._synced

    def may_exist(self, key: str) -> bool:
        if not self._synced:
            return True
        expires = self._expiry.get(key)
        if expires is None:
            return False
        if expires > time.monotonic():
            return True
        del self._expiry[key]
        return False

    def note(self, key: str, ttl_s: float) -> None:
        """An entry stored (by this process, or announced on the channel)."""
        if self._full:
            return
        if len(self._expiry) >= self._max and key not in self._expiry:
            now = time.monotonic()
            self._expiry = {k: t for k, t in self._expiry.items() if t > now}
            if len(self._expiry) >= self._max:
                self._full, self._synced = True, False  # reads ask Redis until a SCAN finds room
                log.warning("response cache: more than %d live entries; raise cache.response.max_known_keys "
                            "so that misses skip Redis again", self._max)
                return
        self._expiry[key] = time.monotonic() + ttl_s

    def forget(self, key: str) -> None:
        """An entry deleted (evicted by a store to keep the byte bound)."""
        self._expiry.pop(key, None)

    async def run(self) -> None:
        """Follow the channel for as long as the app runs, resubscribing after any failure."""
        while True:
            pubsub = self._redis.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                while True:
                    message = await pubsub.get_message(timeout=1.0) or {}
                    kind = message.get("type")
                    if kind == "subscribe" or self._rescan_due():  # "subscribe": first, or a silent reconnect
                        await self._resync()
                    elif kind == "message":
                        key, _, ttl_ms = message["data"].decode().partition(" ")
                        if ttl_ms == "0":
                            self.forget(key)
                        else:
                            self.note(key, int(ttl_ms) / 1000)
            except redis_errors() as exc:
                if (task := asyncio.current_task()) is not None and task.cancelling():
                    raise asyncio.CancelledError from exc  # stopping: redis-py reported the cancel as a failure
                if self._synced:
                    log.warning("response cache: lost the store announcements (%r); reading Redis on every "
                                "lookup until they are back", exc)
                self._synced = False
            finally:
                await pubsub.aclose()
            await asyncio.sleep(1.0)

    def _rescan_due(self) -> bool:
        return self._full and time.monotonic() - self._scanned_at >= self._rescan_when_full_s

    async def _resync(self) -> None:
        """Start over from what Redis holds now (announcements keep arriving meanwhile and are
        read after the scan, so nothing stored from here on is missed)."""
        self._synced, self._full = False, False
        self._scanned_at = time.monotonic()
        self._expiry = {}
        skip = len(self._key_prefix)
        async for name in self._redis.scan_iter(match=_GLOB.sub(r"\\\1", self._key_prefix) + "*", count=1000):
            self.note(name[skip:].decode(), self._ttl_s)
        self._synced = not self._full
