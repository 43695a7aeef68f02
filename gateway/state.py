"""The one application state: built at start-up (`gateway.app`), reached from handlers via
`request.app.state.gw`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.access.gate import Access
from gateway.cache.prefix_cache import PrefixCache
from gateway.cache.response_cache import ResponseCache
from gateway.config.settings import Settings
from gateway.ledger.spend_stats import SpendStats
from gateway.ledger.store import Ledger
from gateway.observability.metrics import Metrics
from gateway.pipeline.pipeline import Pipeline
from gateway.providers.base import Provider
from gateway.providers.upstream_http import UpstreamPool
from gateway.routing.router import Router
from gateway.runtime.background import Background
from gateway.tokens.counter import TokenCounter

__all__ = ["AppState"]


@dataclass(frozen=True)
class AppState:
    settings: Settings
    metrics: Metrics
    tokens: TokenCounter
    pool: UpstreamPool
    providers: dict[str, Provider]
    router: Router
    prefix: PrefixCache
    access: Access
    responses: ResponseCache  # the response cache (`DisabledResponseCache` when it is off)
    ledger: Ledger  # one record per billed request
    stats: SpendStats  # spend per UTC day
    background: Background  # work off the responses' path, drained at shutdown
    pipeline: Pipeline
    secrets: list[str]  # every credential held, for redaction
    redis: Any  # redis.asyncio.Redis when configured, else None
