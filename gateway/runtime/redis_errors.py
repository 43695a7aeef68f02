"""The exceptions a Redis call can raise, imported only when Redis is in use (the client
library costs ~5 MB of memory in a process that never talks to Redis)."""

from __future__ import annotations

from gateway.errors import ServiceUnavailable

__all__ = ["pool_exhausted", "redis_errors", "store_unavailable"]


def redis_errors() -> tuple[type[Exception], ...]:
    """For `except redis_errors():` — the expression is evaluated only when something failed."""
    from redis.exceptions import RedisError

    return (RedisError, OSError)


def pool_exhausted() -> type[Exception]:
    """The error of a command that found every pooled connection busy for the pool's timeout:
    Redis answers, so this is no outage (see `redis_client`)."""
    from gateway.runtime.redis_client import PoolExhausted

    return PoolExhausted


def store_unavailable(store: str, exc: BaseException) -> ServiceUnavailable:
    """The 503 of a store that could not be reached: Redis down, or every pooled connection busy
    for the pool's timeout (then retrying soon will do)."""
    if isinstance(exc, pool_exhausted()):
        return ServiceUnavailable(f"the {store} (Redis) is busy: {exc}; retry shortly", headers={"retry-after": "1"})
    return ServiceUnavailable(f"the {store} (Redis) is unavailable")
