"""Where shared state lives: Redis when configured (every process and replica shares it), else
in-process memory for one process. One builder per kind of state; `app.py` calls them once."""

from __future__ import annotations

import os
import tempfile
from typing import Any

from gateway.access.budgets import Budgets, MemoryBudgets
from gateway.access.keys import KeyStore, MemoryKeyStore
from gateway.access.ratelimit import MemoryRateLimiter, RateLimiter, RedisRateLimiter
from gateway.cache.prefix_index import MemoryPrefixIndex, PrefixIndex, RedisPrefixIndex
from gateway.cache.response_cache import DisabledResponseCache, ResponseCache, StoredResponseCache
from gateway.cache.response_store import CacheStore, MemoryCacheStore, RedisCacheStore
from gateway.config.settings import Settings
from gateway.conversations.store import MemoryResponseStore, RedisResponseStore, ResponseStore
from gateway.database.pool import Database
from gateway.ledger.spend_stats import MemorySpendStats, RedisSpendStats, SpendStats
from gateway.ledger.store import Ledger, MemoryLedger
from gateway.observability.metrics import Metrics
from gateway.routing.state import MemoryRoutingState, RedisRoutingState, RoutingState
from gateway.runtime.background import Background

__all__ = ["budgets", "key_store", "ledger", "prefix_index", "rate_limiter", "redis_client", "response_cache",
           "response_store", "routing_state", "spend_stats", "database"]


def redis_client(settings: Settings, metrics: Metrics) -> Any:
    """A redis.asyncio client when Redis is configured (imported only then), else None."""
    if not settings.redis_url:
        return None
    from gateway.runtime.redis_client import redis_client as client

    return client(settings.redis_url, settings.redis_max_connections, settings.redis_pool_timeout_s,
                  waits=metrics.redis_pool_waits)


def routing_state(settings: Settings, redis: Any) -> RoutingState:
    if redis is None:
        return MemoryRoutingState(settings.routing)
    return RedisRoutingState(redis, settings.routing, settings.redis_prefix)


def response_cache(settings: Settings, redis: Any, metrics: Metrics, background: Background) -> ResponseCache:
    config = settings.cache
    if not config.enabled:
        return DisabledResponseCache()
    store: CacheStore = (MemoryCacheStore(config.max_memory_bytes) if redis is None
                         else RedisCacheStore(redis, settings.redis_prefix, config.ttl_s, config.max_known_keys))
    return StoredResponseCache(store, config, metrics, background)


def prefix_index(settings: Settings, redis: Any) -> PrefixIndex:
    if redis is None:
        return MemoryPrefixIndex(settings.prefix.max_entries)
    return RedisPrefixIndex(redis, settings.redis_prefix, settings.prefix.max_entries)


def key_store(settings: Settings, redis: Any) -> KeyStore:
    if redis is None:
        return MemoryKeyStore()
    from gateway.access.keys_redis import RedisKeyStore

    return RedisKeyStore(redis, settings.redis_prefix, settings.budgets.key_cache_ttl_s)


def budgets(settings: Settings, redis: Any) -> Budgets:
    if redis is None:
        return MemoryBudgets()
    from gateway.access.budgets_redis import RedisBudgets
    from gateway.access.journal import SpendJournal

    path = settings.budgets.journal_path or os.path.join(
        tempfile.gettempdir(), f"gateway-spend-journal-{settings.redis_prefix}.jsonl")
    return RedisBudgets(redis, settings.redis_prefix, journal=SpendJournal(path), fail_open=settings.budgets.fail_open)


def rate_limiter(settings: Settings, redis: Any) -> RateLimiter:
    return MemoryRateLimiter() if redis is None else RedisRateLimiter(redis, settings.redis_prefix)


def spend_stats(settings: Settings, redis: Any) -> SpendStats:
    return MemorySpendStats() if redis is None else RedisSpendStats(redis, settings.redis_prefix)


def ledger(settings: Settings, redis: Any) -> Ledger:
    if redis is None:
        return MemoryLedger(settings.ledger)
    from gateway.ledger.store_redis import RedisLedger

    return RedisLedger(redis, settings.redis_prefix, settings.ledger)


def database(settings: Settings) -> Database | None:
    """The PostgreSQL pool (opened on first use) when `database_url` is set, else None."""
    if not settings.database_url:
        return None
    config = settings.database
    return Database(settings.database_url, config.schema_name, 1, config.pool_size, config.timeout_s)


def response_store(settings: Settings, redis: Any) -> ResponseStore:
    config = settings.conversations
    if redis is None:
        return MemoryResponseStore(config.ttl_s, config.max_entries)
    return RedisResponseStore(redis, settings.redis_prefix, config.ttl_s)
