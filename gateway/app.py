"""The application factory: settings in, ASGI app out. Every service is built here, once, and
lives on `app.state.gw` (`gateway.state.AppState`)."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from gateway import backends
from gateway.access.gate import Access
from gateway.access.periods import period_of
from gateway.api import admin, batches, dashboard, estimate, health, ledger, metrics, models, responses
from gateway.api.asgi import GatewayASGI
from gateway.api.errors import install_error_handlers
from gateway.batches.books import BatchBooks
from gateway.batches.service import BatchService
from gateway.batches.store import BatchStore, build_store
from gateway.cache.prefix_cache import PrefixCache
from gateway.config.catalog import builtin_config
from gateway.config.schema import load_config
from gateway.config.settings import Settings, resolve_settings
from gateway.database.migrate import upgrade
from gateway.database.pool import Database
from gateway.database.reconcile import Reconciler
from gateway.database.sqlite import Sqlite
from gateway.money.price_table import load_price_table
from gateway.observability.error_log import ErrorLog
from gateway.observability.metrics import Metrics
from gateway.pipeline.embeddings import Embeddings
from gateway.pipeline.pipeline import Pipeline
from gateway.pipeline.settle import Books
from gateway.providers.litellm_provider import load_litellm
from gateway.providers.registry import build_native, build_providers
from gateway.providers.upstream_http import UpstreamPool
from gateway.redaction import Redactor
from gateway.routing.router import Router
from gateway.runtime.background import Background
from gateway.runtime.heap import release_free_memory
from gateway.state import AppState
from gateway.tokens.counter import TokenCounter
from gateway.tokens.pool import CountingPool

__all__ = ["app_from_env", "build_state", "create_app", "load_settings"]

log = logging.getLogger("gateway")
CONFIG_ENV = "GATEWAY_CONFIG"


def load_settings(path: str | Path | None) -> Settings:
    """Phase one (shape) and phase two (prices, keys, cross-references); raises ConfigError."""
    config = load_config(path) if path else builtin_config()
    return resolve_settings(config, load_price_table(), str(path) if path else "built-in catalog")


def build_state(settings: Settings, tokens: TokenCounter, app_metrics: Metrics, errors: ErrorLog,
                redact: Redactor) -> AppState:
    """Every service, wired once (inside the running event loop: some bind to it)."""
    pool = UpstreamPool()
    redis = backends.redis_client(settings, app_metrics)
    database = backends.database(settings)
    store = backends.sqlite(settings)
    background = Background()  # one set of off-the-path tasks, drained at shutdown
    counting = CountingPool(tokens, settings.limits)
    prefix = PrefixCache(settings.prefix, tokens, counting, backends.prefix_index(settings, redis), app_metrics,
                         background)
    router = Router(settings, backends.routing_state(settings, redis), prefix, tokens)
    access = Access(backends.key_store(settings, redis, database, store),
                    backends.budgets(settings, redis, database, store), backends.rate_limiter(settings, redis),
                    app_metrics, settings.budgets, settings.require_keys, background)
    ledger_store = backends.ledger(settings, redis, database, app_metrics, store)
    stats = backends.spend_stats(settings, redis, ledger_store)
    responses = backends.response_cache(settings, redis, app_metrics, background)
    providers = build_providers(pool)
    books = Books(tokens, app_metrics, ledger_store, stats, prefix, access, router, background)
    pipeline = Pipeline(settings, router, access, prefix, responses, providers, counting, books, redact,
                        build_native(pool))
    batch_books = BatchBooks(settings, tokens, app_metrics, ledger_store, stats, access.budgets, redact)
    batch_store = _batch_store(settings, redis, database, store)
    batch_service = BatchService(settings, router, access, counting, batch_store, batch_books, background)
    return AppState(settings, app_metrics, tokens, counting, pool, providers, router, prefix, access, responses,
                    ledger_store, stats, background, pipeline, redact, errors, redis,
                    backends.response_store(settings, redis),
                    Embeddings(settings, router, access, responses, providers, books), database, store, batch_service)


def _batch_store(settings: Settings, redis: object, database: Database | None, store: Sqlite | None) -> BatchStore:
    """Where batches and files live: PostgreSQL whenever `database_url` is set, with or without
    Redis (the system of record: a batch carries a budget hold and its cost; docs/batches.md),
    else Redis, else the SQLite file, else this process's memory (`build_store`)."""
    if database is not None:
        from gateway.batches.store_pg import PgBatchStore

        return PgBatchStore(database, settings.batches.file_ttl_s)
    return build_store(settings, redis, store)


def _warm_up(tokens: TokenCounter, upstream_ids: list[str], litellm: bool) -> None:
    tokens.warm_up(upstream_ids)
    if litellm:
        load_litellm()
        log.info("litellm imported (a configured model uses it)")
    gc.collect()
    release_free_memory()  # start-up garbage (price table, rank dicts) back to the OS
    # What exists now lives as long as the process: keep it out of the collector's full passes.
    gc.freeze()


@asynccontextmanager
async def _running(state: AppState) -> AsyncIterator[None]:
    """The app's background chores while it serves; at shutdown, every settlement and record
    written before the connections close."""
    settings, loop = state.settings, asyncio.get_running_loop()
    if state.database is not None and settings.database.migrate_on_start:
        applied = await upgrade(state.database)
        log.info("database schema: %s", ", ".join(f"{m.version:04d}_{m.name}" for m in applied) or "up to date")
    if state.sqlite is not None:  # created now, or a clear error before serving
        await state.sqlite.open()
        log.info("keys, teams, spend and the ledger: SQLite file %s", state.sqlite.path)
    chores = [loop.create_task(state.access.replay_forever()),
              loop.create_task(state.access.refresh_gauges_forever(state.ledger)),
              loop.create_task(state.metrics.money.flush_forever()), loop.create_task(state.responses.run())]
    ledger_writer = loop.create_task(state.ledger.run())
    spend_writer = loop.create_task(state.access.budgets.run())  # settled spend to the database, if any
    chores.append(loop.create_task(state.access.keys.run()))  # the key cache re-synced from the database
    if state.batches is not None:  # running batches followed to their end (docs/batches.md)
        chores.append(loop.create_task(state.batches.run()))
    if state.database is not None and state.redis is not None:  # the drift gauge (docs/budgets.md#reconciliation)
        drift = Reconciler(state.database, state.redis, settings.redis_prefix, period_of, ledger=False)
        chores.append(loop.create_task(drift.refresh_forever(state.metrics.spend_drift)))
    # Encodings take ~0.5 s to load: do it off the event loop after start-up, not before.
    upstream_ids = [m.upstream_model for m in settings.models.values()]
    litellm = any(m.wire == "litellm" and not m.unavailable_reason for m in settings.models.values())
    warm = loop.run_in_executor(None, _warm_up, state.tokens, upstream_ids, litellm)
    try:
        yield
    finally:
        warm.cancel()
        for chore in chores:
            chore.cancel()
        await state.background.drain()
        state.access.budgets.stop()  # not cancelled: every settlement drained above is written (or journaled)
        await spend_writer
        await state.stats.flush()
        state.metrics.money.flush_logged()  # nothing adds money after the drain
        state.ledger.stop()  # not cancelled: a write cut off mid-way would be lost or doubled
        await ledger_writer
        await state.ledger.flush()
        if state.batches is not None:
            await state.batches.close()
        state.pool.close()
        state.counting.close()
        await asyncio.gather(state.responses.close(), state.prefix.close())  # their own Redis (cache.redis_url)
        if state.redis is not None:
            await state.redis.aclose()
        if state.database is not None:
            await state.database.close()
        if state.sqlite is not None:
            await state.sqlite.close()


def create_app(settings: Settings) -> GatewayASGI:
    tokens = TokenCounter()
    app_metrics = Metrics()
    errors = ErrorLog()
    redact = Redactor(settings.secrets())  # (one regex of every credential's forms, built once)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.gw = state = build_state(settings, tokens, app_metrics, errors, redact)
        async with _running(state):
            yield

    # No trailing-slash redirects: Starlette builds them from the Host header, so a forged Host
    # would send a `?key=` URL to another site.
    app = FastAPI(title="LLM gateway", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None,
                  redirect_slashes=False)
    install_error_handlers(app, redact, errors)
    for module in (models, estimate, health, metrics, admin, ledger, dashboard, responses, batches):
        app.include_router(module.router)
    return GatewayASGI(app, app_metrics.in_flight, settings.server)


def app_from_env() -> GatewayASGI:
    """Factory for `uvicorn --factory` workers: the config path comes from GATEWAY_CONFIG."""
    return create_app(load_settings(os.environ.get(CONFIG_ENV) or None))
