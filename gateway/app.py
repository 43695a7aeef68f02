"""The application factory: settings in, FastAPI app out. All state lives on `app.state.gw`."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from gateway import backends
from gateway.access.gate import Access
from gateway.api import admin, chat, dashboard, estimate, health, ledger, metrics, models
from gateway.api.errors import install_error_handlers
from gateway.cache.prefix_cache import PrefixCache
from gateway.config.catalog import builtin_config
from gateway.config.schema import load_config
from gateway.config.settings import Settings, resolve_settings
from gateway.money.price_table import load_price_table
from gateway.observability.metrics import Metrics
from gateway.providers.litellm_provider import load_litellm
from gateway.providers.registry import build_providers
from gateway.providers.upstream_http import UpstreamPool
from gateway.routing.router import Router
from gateway.runtime.background import Background
from gateway.runtime.heap import release_free_memory
from gateway.state import AppState
from gateway.tokens.counter import TokenCounter

__all__ = ["app_from_env", "create_app", "load_settings"]

log = logging.getLogger("gateway")
CONFIG_ENV = "GATEWAY_CONFIG"


def load_settings(path: str | Path | None) -> Settings:
    """Phase one (shape) and phase two (prices, keys, cross-references); raises ConfigError."""
    config = load_config(path) if path else builtin_config()
    return resolve_settings(config, load_price_table(), str(path) if path else "built-in catalog")


class GatewayASGI:
    """The process's ASGI entry point. The hot route, `POST /v1/chat/completions`, goes straight
    to its handler: FastAPI's middleware and dependency stack costs ~0.15 ms of CPU per request
    there. Every other route, the error handlers and the lifespan are FastAPI's."""

    def __init__(self, api: FastAPI, in_flight: Any) -> None:
        self.api = api
        self.in_flight = in_flight  # gateway_in_flight_requests: up on entry, down when the last byte is sent

    @property
    def state(self) -> Any:
        return self.api.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == chat.PATH and scope["method"] == "POST":
            scope["app"] = self.api
            self.in_flight.inc()
            try:
                response = await chat.chat_completions(Request(scope, receive))
                await response(scope, receive, send)
            finally:
                self.in_flight.dec()
            return
        await self.api(scope, receive, send)


def _warm_up(tokens: TokenCounter, upstream_ids: list[str], litellm: bool) -> None:
    tokens.warm_up(upstream_ids)
    if litellm:
        load_litellm()
        log.info("litellm imported (a configured model uses it)")
    gc.collect()
    release_free_memory()  # start-up garbage (price table, rank dicts) back to the OS
    # What exists now lives as long as the process: keep it out of the collector's full passes.
    gc.freeze()


def create_app(settings: Settings) -> GatewayASGI:
    tokens = TokenCounter()
    app_metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = UpstreamPool()
        redis = backends.redis_client(settings)
        background = Background()  # one set of off-the-path tasks, drained at shutdown
        prefix = PrefixCache(settings.prefix, tokens, backends.prefix_index(settings, redis), app_metrics, background)
        router = Router(settings, tokens, backends.routing_state(settings, redis), prefix)
        access = Access(backends.key_store(settings, redis), backends.budgets(settings, redis),
                        backends.rate_limiter(settings, redis), backends.spend_stats(settings, redis), app_metrics,
                        settings.budgets, settings.require_keys, background)
        ledger = backends.ledger(settings, redis)
        app.state.gw = AppState(
            settings, app_metrics, tokens, pool, build_providers(pool), router, prefix, access, settings.secrets(),
            redis, backends.response_cache(settings, redis), ledger=ledger, background=background,
        )
        loop = asyncio.get_running_loop()
        chores = [loop.create_task(access.replay_forever()), loop.create_task(access.refresh_gauges_forever()),
                  loop.create_task(app_metrics.money.flush_forever())]
        if app.state.gw.response_cache is not None:
            chores.append(loop.create_task(app.state.gw.response_cache.run()))
        ledger_writer = loop.create_task(ledger.run())
        # Encodings take ~0.5 s to load: do it off the event loop after start-up, not before.
        upstream_ids = [m.upstream_model for m in settings.models.values()]
        litellm = any(m.wire == "litellm" and not m.unavailable_reason for m in settings.models.values())
        warm = asyncio.get_running_loop().run_in_executor(None, _warm_up, tokens, upstream_ids, litellm)
        try:
            yield
        finally:
            warm.cancel()
            for chore in chores:
                chore.cancel()
            await background.drain()
            app_metrics.money.flush_logged()  # nothing adds money after the drain
            ledger.stop()  # not cancelled: a write cut off mid-way would be lost or doubled
            await ledger_writer
            await ledger.flush()
            pool.close()
            if redis is not None:
                await redis.aclose()

    app = FastAPI(title="LLM gateway", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    install_error_handlers(app, settings.secrets())
    for module in (models, estimate, health, metrics, admin, ledger, dashboard):
        app.include_router(module.router)
    return GatewayASGI(app, app_metrics.in_flight)


def app_from_env() -> GatewayASGI:
    """Factory for `uvicorn --factory` workers: the config path comes from GATEWAY_CONFIG."""
    return create_app(load_settings(os.environ.get(CONFIG_ENV) or None))
