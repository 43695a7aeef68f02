"""Where shared state lives: Redis when configured (every process and replica shares it), else
in-process memory for one process. One builder per kind of state; `app.py` calls them once. The
caches (response cache, prefix index) may have a Redis of their own (`cache.redis_url`).

Keys, teams, settled spend and the ledger have a record: PostgreSQL with `database_url`; else
Redis; else the SQLite file of `settings.sqlite_path` (`gateway.config.storage`), which the
processes of one machine share; else (`storage.backend: memory`) this process's memory."""

from __future__ import annotations

import hashlib
import os
import tempfile
from typing import TYPE_CHECKING, Any

from gateway.access.budgets import Budgets, MemoryBudgets
from gateway.access.keys import KeyStore, MemoryKeyStore
from gateway.access.ratelimit import MemoryRateLimiter, RateLimiter, RedisRateLimiter
from gateway.cache.prefix_index import MemoryPrefixIndex, PrefixIndex, RedisPrefixIndex
from gateway.cache.response_cache import DisabledResponseCache, ResponseCache, StoredResponseCache
from gateway.cache.response_store import CacheStore, MemoryCacheStore, RedisCacheStore
from gateway.config.settings import Settings
from gateway.conversations.store import MemoryResponseStore, RedisResponseStore, ResponseStore
from gateway.database.pool import Database
from gateway.database.sqlite import Sqlite
from gateway.ledger.spend_stats import MemorySpendStats, RedisSpendStats, SpendStats
from gateway.ledger.store import Ledger, MemoryLedger
from gateway.observability.metrics import Metrics
from gateway.routing.state import MemoryRoutingState, RedisRoutingState, RoutingState
from gateway.runtime.background import Background

if TYPE_CHECKING:
    from gateway.access.keys_redis import RedisKeyStore

__all__ = ["budgets", "key_store", "ledger", "prefix_index", "rate_limiter", "redis_client", "response_cache",
           "response_store", "routing_state", "spend_stats", "database", "sqlite"]


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


def _cache_client(settings: Settings, redis: Any, metrics: Metrics | None = None) -> tuple[Any, bool]:
    """The Redis client a cache is stored on, and whether it is the cache's own: a client on
    `cache.redis_url` when that is set (closed by the cache at shutdown), else the shared one."""
    if not settings.cache_redis_url:
        return redis, False
    from gateway.runtime.redis_client import redis_client as client

    waits = metrics.redis_pool_waits if metrics is not None else None
    return client(settings.cache_redis_url, settings.redis_max_connections, settings.redis_pool_timeout_s,
                  waits=waits), True


def response_cache(settings: Settings, redis: Any, metrics: Metrics, background: Background) -> ResponseCache:
    config = settings.cache
    if not config.enabled:
        return DisabledResponseCache()
    client, own = _cache_client(settings, redis, metrics)
    store: CacheStore = (MemoryCacheStore(config.max_memory_bytes) if client is None
                         else RedisCacheStore(client, settings.redis_prefix, config.ttl_s, config.max_known_keys,
                                              config.max_memory_bytes, owns_client=own))
    return StoredResponseCache(store, config, metrics, background)


def prefix_index(settings: Settings, redis: Any) -> PrefixIndex:
    config = settings.prefix
    client, own = _cache_client(settings, redis) if config.enabled else (None, False)
    if client is None:
        return MemoryPrefixIndex(config.max_entries, max_bytes=config.max_memory_bytes)
    return RedisPrefixIndex(client, settings.redis_prefix, config.max_entries, config.max_memory_bytes,
                            owns_client=own)


def key_store(settings: Settings, redis: Any, database: Database | None = None,
              store: Sqlite | None = None) -> KeyStore:
    """With a database: PostgreSQL is the record, Redis (if any) the authentication cache. With
    the SQLite file: it is the record, each process remembering keys for `key_cache_ttl_s`."""
    if store is not None:
        from gateway.access.keys_recorded import RecordedKeyStore
        from gateway.access.keys_sqlite import SqliteKeys

        return RecordedKeyStore(SqliteKeys(store), None, settings.budgets.key_cache_ttl_s)
    if database is not None:
        from gateway.access.keys_pg import PgKeys
        from gateway.access.keys_recorded import RecordedKeyStore

        ttl = settings.budgets.key_cache_ttl_s
        cache = _redis_key_store(settings, redis) if redis is not None else None
        return RecordedKeyStore(PgKeys(database), cache, ttl, sync_interval_s=max(ttl, 1.0))
    if redis is None:
        return MemoryKeyStore()
    return _redis_key_store(settings, redis)


def _redis_key_store(settings: Settings, redis: Any) -> RedisKeyStore:
    from gateway.access.keys_redis import RedisKeyStore

    return RedisKeyStore(redis, settings.redis_prefix, settings.budgets.key_cache_ttl_s)


def _spend_journal_path(settings: Settings, database: Database | None) -> str:
    """The journal of settlements Redis (or the database) could not take yet: `budgets.journal_path`,
    else one in the temp dir per Redis prefix (and database and schema, with one)."""
    if database is None:
        return settings.budgets.journal_path or os.path.join(
            tempfile.gettempdir(), f"gateway-spend-journal-{settings.redis_prefix}.jsonl")
    digest = hashlib.sha256(f"{database.url}\0{database.schema}".encode()).hexdigest()[:12]
    return settings.budgets.journal_path or os.path.join(
        tempfile.gettempdir(), f"gateway-spend-journal-{settings.redis_prefix}-{digest}.jsonl")


def budgets(settings: Settings, redis: Any, database: Database | None = None,
            store: Sqlite | None = None) -> Budgets:
    """With a database: settled spend is recorded there and live counters are rebuilt from it. With
    the SQLite file: holds and settled spend are there."""
    if store is not None:
        from gateway.access.budgets_sqlite import SqliteBudgets
        from gateway.access.journal import SpendJournal

        path = settings.budgets.journal_path or f"{store.path}.spend-journal.jsonl"
        return SqliteBudgets(store, SpendJournal(path), fail_open=settings.budgets.fail_open)
    if database is not None:
        return _recorded_budgets(settings, redis, database)
    if redis is None:
        return MemoryBudgets()
    from gateway.access.budgets_redis import RedisBudgets
    from gateway.access.journal import SpendJournal

    path = _spend_journal_path(settings, None)
    return RedisBudgets(redis, settings.redis_prefix, journal=SpendJournal(path), fail_open=settings.budgets.fail_open)


def _recorded_budgets(settings: Settings, redis: Any, database: Database) -> Budgets:
    from gateway.access.journal import SpendJournal
    from gateway.access.spend_pg import SpendRecord

    path = _spend_journal_path(settings, database)
    record_journal = SpendJournal(f"{path.removesuffix('.jsonl')}.record.jsonl")  # not yet in the database
    writer = {"interval_s": settings.ledger.flush_interval_s}  # settled spend paced like the ledger's rows
    if redis is None:
        from gateway.access.budgets_pg_memory import RecordedMemoryBudgets

        return RecordedMemoryBudgets(SpendRecord(database), record_journal, writer=writer)
    from gateway.access.budgets_pg import RecordedBudgets

    return RecordedBudgets(redis, SpendRecord(database), record_journal, settings.redis_prefix,
                           journal=SpendJournal(path), fail_open=settings.budgets.fail_open, writer=writer)


def rate_limiter(settings: Settings, redis: Any) -> RateLimiter:
    return MemoryRateLimiter() if redis is None else RedisRateLimiter(redis, settings.redis_prefix)


def spend_stats(settings: Settings, redis: Any, ledger_store: Ledger) -> SpendStats:
    """With PostgreSQL or SQLite, computed from the ledger table (`ledger_store`) by SQL."""
    if settings.sqlite_path:
        from gateway.ledger.spend_stats_sqlite import SqliteSpendStats
        from gateway.ledger.store_sqlite import SqliteLedger

        if isinstance(ledger_store, SqliteLedger):
            return SqliteSpendStats(ledger_store)
    if settings.database_url:
        from gateway.ledger.spend_stats_pg import PostgresSpendStats
        from gateway.ledger.store_pg import PostgresLedger

        if isinstance(ledger_store, PostgresLedger):
            return PostgresSpendStats(ledger_store)
    return MemorySpendStats() if redis is None else RedisSpendStats(redis, settings.redis_prefix)


def ledger(settings: Settings, redis: Any, database: Database | None, metrics: Metrics,
           store: Sqlite | None = None) -> Ledger:
    """PostgreSQL when `database_url` is set (journaled locally while it is down), else Redis, else
    the SQLite file (journaled likewise), else this process's memory."""
    if store is not None:
        from gateway.ledger.journal import LedgerJournal
        from gateway.ledger.store_sqlite import SqliteLedger

        path = settings.ledger.journal_path or f"{store.path}.ledger-journal.jsonl"
        return SqliteLedger(store, settings.ledger, LedgerJournal(path), metrics.ledger_backlog)
    if database is not None:
        from gateway.ledger.journal import LedgerJournal
        from gateway.ledger.store_pg import PostgresLedger, default_journal_path

        path = settings.ledger.journal_path or default_journal_path(database.url, database.schema)
        return PostgresLedger(database, settings.ledger, LedgerJournal(path), metrics.ledger_backlog)
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


def sqlite(settings: Settings) -> Sqlite | None:
    """The SQLite store (opened on first use, on a thread of its own) when it keeps the records."""
    if not settings.sqlite_path:
        return None
    return Sqlite(settings.sqlite_path, settings.storage.sqlite_timeout_s)


def response_store(settings: Settings, redis: Any) -> ResponseStore:
    config = settings.conversations
    if redis is None:
        return MemoryResponseStore(config.ttl_s, config.max_entries)
    return RedisResponseStore(redis, settings.redis_prefix, config.ttl_s)
