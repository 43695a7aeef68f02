"""The one application state: built at start-up, reached from handlers via `request.app.state.gw`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gateway.access.gate import Access
from gateway.cache.prefix_cache import PrefixCache
from gateway.cache.response_store import CacheStore
from gateway.config.schema import LedgerConfig
from gateway.config.settings import ModelSpec, Settings
from gateway.errors import ModelNotFound, ServiceUnavailable
from gateway.ledger.store import Ledger, MemoryLedger
from gateway.observability.metrics import Metrics
from gateway.providers.base import Provider
from gateway.providers.upstream_http import UpstreamPool
from gateway.routing.router import Router
from gateway.runtime.background import Background
from gateway.tokens.counter import TokenCounter

__all__ = ["AppState"]


@dataclass
class AppState:
    settings: Settings
    metrics: Metrics
    tokens: TokenCounter
    pool: UpstreamPool
    providers: dict[str, Provider]
    router: Router
    prefix: PrefixCache
    access: Access
    secrets: list[str] = field(default_factory=list)  # every credential held, for redaction
    redis: Any = None  # redis.asyncio.Redis when configured
    response_cache: CacheStore | None = None  # None when the response cache is disabled
    ledger: Ledger = field(default_factory=lambda: MemoryLedger(LedgerConfig()))  # one record per billed request
    background: Background = field(default_factory=Background)  # work off the responses' path

    def resolve_model(self, name: str) -> ModelSpec:
        spec = self.settings.models.get(name)
        if spec is None:
            raise ModelNotFound(f"The model or tier '{name}' does not exist", param="model")
        if spec.unavailable_reason is not None:
            raise ServiceUnavailable(f"model '{name}' is unavailable: {spec.unavailable_reason}", param="model")
        return spec
