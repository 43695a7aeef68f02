"""The Redis client every store shares, built only when Redis is configured (the client library
costs ~5 MB of memory in a process that never talks to Redis, so this module is imported only
then).

Its connection pool waits for a free connection when every one is busy (a burst of requests is
not an outage), up to `pool_timeout_s`; then the command fails with `PoolExhausted`, which is
not Redis being down: stores that fail open while Redis is down refuse instead (a saturated
pool never admits a request unchecked). Each wait is counted in
`gateway_redis_pool_waits_total`. Only a Redis that does not answer (socket timeout, refused
connection) is down.
"""

from __future__ import annotations

from typing import Any

import redis
from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import ConnectionError as RedisConnectionError

__all__ = ["PoolExhausted", "WaitingPool", "redis_client"]

SOCKET_TIMEOUT_S = 2.0


class PoolExhausted(RedisConnectionError):
    """Every pooled connection stayed busy for the pool's timeout. Redis itself answers."""


class WaitingPool(BlockingConnectionPool):
    def __init__(self, *, waits: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._waits = waits  # a counter: incremented each time a command has to wait

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        if self._waits is not None and not self.can_get_connection():
            self._waits.inc()
        try:
            return await super().get_connection(*args, **kwargs)  # type: ignore[no-untyped-call]
        except RedisConnectionError as exc:
            if self.can_get_connection() or "No connection available" not in str(exc):
                raise
            raise PoolExhausted(f"all {self.max_connections} Redis connections stayed busy for "
                                f"{self.timeout:g}s") from exc


def _driver_info() -> dict[str, Any]:
    """redis-py's version, given once: otherwise recent releases (8.1 here) read their package
    metadata for every new connection, on the event loop (0.5 ms warm, 16 ms seen cold)."""
    try:
        from redis.driver_info import DriverInfo
    except ImportError:  # older releases read it once, at import
        return {}
    return {"driver_info": DriverInfo(lib_version=redis.__version__)}


def redis_client(url: str, max_connections: int, pool_timeout_s: float, waits: Any = None) -> Redis:
    """A redis.asyncio client on a `WaitingPool` (closed with the client)."""
    pool = WaitingPool.from_url(url, max_connections=max_connections, timeout=pool_timeout_s, waits=waits,
                                socket_timeout=SOCKET_TIMEOUT_S, socket_connect_timeout=SOCKET_TIMEOUT_S,
                                **_driver_info())
    return Redis.from_pool(pool)
