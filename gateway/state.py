"""The one application state: built at start-up (`gateway.app`), reached from handlers via
`request.app.state.gw`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.access.gate import Access
from gateway.batches.service import BatchService
from gateway.cache.prefix_cache import PrefixCache
from gateway.cache.response_cache import ResponseCache
from gateway.config.settings import Settings
from gateway.conversations.store import ResponseStore
from gateway.database.pool import Database
from gateway.database.sqlite import Sqlite
from gateway.ledger.spend_stats import SpendStats
from gateway.ledger.store import Ledger
from gateway.observability.error_log import ErrorLog
from gateway.observability.metrics import Metrics
from gateway.pipeline.embeddings import Embeddings
from gateway.pipeline.pipeline import Pipeline
from gateway.providers.base import Provider
from gateway.providers.upstream_http import UpstreamPool
from gateway.redaction import Redactor
from gateway.routing.router import Router
from gateway.runtime.background import Background
from gateway.tokens.counter import TokenCounter
from gateway.tokens.pool import CountingPool

__all__ = ["AppState"]


@dataclass(frozen=True)
class AppState:
    settings: Settings
    metrics: Metrics
    tokens: TokenCounter
    counting: CountingPool  # counts prompts, large ones off the event loop
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
    redact: Redactor  # masks every credential held, in the forms it may be echoed
    errors: ErrorLog  # unexpected errors: a line each, a traceback per cause per minute
    redis: Any  # redis.asyncio.Redis when configured, else None
    conversations: ResponseStore  # responses kept for the Responses API
    embeddings: Embeddings  # the /v1/embeddings path
    database: Database | None  # PostgreSQL, the system of record (with `database_url`)
    sqlite: Sqlite | None = None  # the SQLite file, the system of record without PostgreSQL and Redis
    batches: BatchService | None = None  # the Batch API (/v1/files, /v1/batches)
