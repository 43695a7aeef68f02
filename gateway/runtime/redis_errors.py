"""The exceptions a Redis call can raise, imported only when Redis is in use (the client
library costs ~5 MB of memory in a process that never talks to Redis)."""

from __future__ import annotations

__all__ = ["redis_errors"]


def redis_errors() -> tuple[type[Exception], ...]:
    """For `except redis_errors():` — the expression is evaluated only when something failed."""
    from redis.exceptions import RedisError

    return (RedisError, OSError)
