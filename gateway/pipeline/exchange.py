"""Per-request bookkeeping shared by the non-streaming and streaming paths."""

from __future__ import annotations

import logging
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from time import perf_counter
from typing import TYPE_CHECKING, Any

from starlette.requests import Request

from gateway.access.gate import Grant
from gateway.config.settings import ModelSpec
from gateway.errors import GatewayError, RequestTooLarge
from gateway.ledger.store import LedgerRecord
from gateway.money.pricing import Cost, Usage
from gateway.state import AppState

if TYPE_CHECKING:
    from gateway.cache.prefix_cache import PrefixPlan
    from gateway.routing.router import RoutePlan

__all__ = ["Call", "read_body", "request_id"]

log = logging.getLogger("gateway.requests")
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def request_id(request: Request) -> str:
    given = request.headers.get("x-request-id")
    return given if given and _SAFE_ID.match(given) else uuid.uuid4().hex


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing anything over `limit` bytes (413) without reading it all."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestTooLarge(f"request body is {declared} bytes; the limit is {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestTooLarge(f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


@dataclass(slots=True)
class Call:
    state: AppState
    request_id: str
    started: float = field(default_factory=perf_counter)
    spec: ModelSpec | None = None
    body: dict[str, Any] = field(default_factory=dict)
    tier: str = ""
    team: str = ""
    plan: RoutePlan | None = None  # when routed: x-gateway-route explains the choice
    prefix: PrefixPlan | None = None  # prompt-cache predictions (long prompts only)
    grant: Grant = field(default_factory=Grant)  # the caller's key, team, rate-limit charge and budget hold
    baseline: ModelSpec | None = None  # the tier's baseline, for routing savings
    cache_key: str | None = None  # response-cache key of the current attempt
    cache_write: bool = False  # may the answer be stored
    cache_result: str = "bypass"  # x-gateway-cache: hit | miss | bypass
    upstream_started: float = 0.0

    @property
    def model_label(self) -> str:
        return self.spec.name if self.spec else "none"

    def headers(self) -> dict[str, str]:
        headers = {"x-request-id": self.request_id, "x-gateway-cache": self.cache_result}
        if self.spec is not None:
            headers["x-gateway-model"] = self.spec.name
        if self.tier:
            headers["x-gateway-tier"] = self.tier
            if self.plan is not None and self.spec is not None:
                headers["x-gateway-route"] = self.plan.reason(self.spec.name)
        return headers

    def ledger_record(self, usage: Usage, cost: Cost, status: str, routing_saved: int = 0,
                      cache_saved: int = 0) -> LedgerRecord:
        """This request's spend-ledger record (the model must be known)."""
        spec, key = self.spec, self.grant.key
        assert spec is not None
        return LedgerRecord(
            datetime.now(UTC).isoformat(timespec="microseconds"), self.request_id,
            key.id if key else "", (key.alias or "") if key else "", self.team, spec.name, spec.provider, self.tier,
            usage.input, usage.cached_input, usage.cache_write_5m + usage.cache_write_1h, usage.output,
            usage.reasoning, cost.input, cost.cached_input, cost.cache_write, cost.output, cost.reasoning,
            cost.total, self.cache_result,
            self.plan.reason(spec.name) if self.plan is not None and self.tier else "", status,
            round((perf_counter() - self.started) * 1000, 3), routing_saved, cache_saved,
        )

    def record(self, status: str, upstream_time: float = 0.0) -> None:
        """Request count, duration and the gateway's own overhead."""
        metrics = self.state.metrics
        now = perf_counter()
        metrics.child(metrics.requests, self.model_label, self.tier, status).inc()
        if self.spec is not None:
            metrics.child(metrics.duration, self.spec.name).observe(now - self.started)
            if status == "200":
                self.state.router.observe_latency(self.spec.name, now - self.started)
            metrics.overhead.observe(max(now - self.started - upstream_time, 0.0))

    def upstream_failed(self, exc: GatewayError) -> None:
        if exc.kind is not None and self.spec is not None:
            metrics = self.state.metrics
            metrics.child(metrics.upstream_errors, self.spec.name, exc.kind).inc()
            log.warning("request %s: %s (%s)", self.request_id, exc.message, exc.kind)

    def failed(self, exc: GatewayError) -> None:
        self.upstream_failed(exc)
        self.record(str(exc.status_code))
