"""The application factory: settings in, FastAPI app out. All state lives on `app.state.gw`."""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from gateway.api import chat, health, metrics, models
from gateway.catalog import builtin_config
from gateway.config import load_config
from gateway.errors import GatewayError, InvalidRequest
from gateway.metrics import Metrics
from gateway.price_table import load_price_table
from gateway.providers.errors import redact
from gateway.providers.registry import build_providers
from gateway.settings import Settings, resolve_settings
from gateway.state import AppState
from gateway.tokens import TokenCounter

__all__ = ["app_from_env", "create_app", "load_settings"]

log = logging.getLogger("gateway")
CONFIG_ENV = "GATEWAY_CONFIG"


def load_settings(path: str | Path | None) -> Settings:
    """Phase one (shape) and phase two (prices, keys, cross-references); raises ConfigError."""
    config = load_config(path) if path else builtin_config()
    return resolve_settings(config, load_price_table(), str(path) if path else "built-in catalog")


def _error_response(request: Request, exc: GatewayError, secrets: list[str]) -> Response:
    rid = getattr(request.state, "request_id", None) or uuid.uuid4().hex
    exc.message = redact(exc.message, secrets)
    headers = {"x-request-id": rid, **exc.headers}
    if exc.status_code == 429 and exc.code == "budget_exceeded":
        headers["x-should-retry"] = "false"
    return Response(exc.body_bytes(), status_code=exc.status_code, media_type="application/json", headers=headers)


def _install_error_handlers(app: FastAPI, secrets: list[str]) -> None:
    async def on_gateway_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, GatewayError)
        return _error_response(request, exc, secrets)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        err = GatewayError(str(exc.detail), code="not_found" if exc.status_code == 404 else None)
        err.status_code, err.error_type = exc.status_code, "invalid_request_error"
        return _error_response(request, err, secrets)

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        return _error_response(request, InvalidRequest(str(exc)), secrets)

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s", request.url.path)
        return _error_response(request, GatewayError("internal gateway error"), secrets)

    app.add_exception_handler(GatewayError, on_gateway_error)
    app.add_exception_handler(HTTPException, on_http_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(Exception, on_unexpected)


def create_app(settings: Settings) -> FastAPI:
    tokens = TokenCounter()
    app_metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=30)
        session = aiohttp.ClientSession(connector=connector, skip_auto_headers=("User-Agent",))
        app.state.gw = AppState(settings, app_metrics, tokens, session, build_providers(session))
        # Encodings take ~0.5 s to load: do it off the event loop after start-up, not before.
        warm = asyncio.get_running_loop().run_in_executor(None, tokens.warm_up)
        try:
            yield
        finally:
            warm.cancel()
            await session.close()

    app = FastAPI(title="LLM gateway", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    _install_error_handlers(app, settings.secrets())
    for module in (chat, models, health, metrics):
        app.include_router(module.router)
    return app


def app_from_env() -> FastAPI:
    """Factory for `uvicorn --factory` workers: the config path comes from GATEWAY_CONFIG."""
    return create_app(load_settings(os.environ.get(CONFIG_ENV) or None))
