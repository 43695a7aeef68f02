"""What the pipeline knows about one request as it goes: who sent it (`Caller`), how it was
routed (`Route`), each model it tried (`Attempt`), and what it gives back to the API layer
(`Answer` or `Stream`). Only the pipeline writes them."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any, Generic, NamedTuple, TypeVar

from gateway.access.gate import NO_RESERVATION, Grant, Reservation
from gateway.cache.prefix_cache import NO_PREDICTIONS, PrefixPlan
from gateway.config.settings import ModelSpec
from gateway.errors import GatewayError
from gateway.money.pricing import Cost
from gateway.pipeline.embedding_request import EmbeddingRequest
from gateway.pipeline.request import ChatRequest
from gateway.routing.router import RoutePlan

__all__ = ["Answer", "Attempt", "Caller", "Exchange", "Route", "Stream", "StreamEnd"]


class Caller(NamedTuple):
    """Who sent the request, and when it arrived."""

    request_id: str
    grant: Grant  # the virtual key and its team (none for an anonymous caller)
    credential: str  # the Authorization header as sent
    arrived: float  # perf_counter()

    @property
    def team(self) -> str:
        return self.grant.team_label

    def tenant(self) -> str:
        """Whose response-cache entries these are: the key's team, else the key, else the
        caller's own bearer token (hashed), so two tenants never see each other's answers."""
        key = self.grant.key
        if key is not None:
            return f"team:{key.team}" if key.team else f"key:{key.id}"
        return "bearer:" + hashlib.sha256(self.credential.encode()).hexdigest()


class Route(NamedTuple):
    """How the request was routed: by name (no plan) or by its tier's plan."""

    plan: RoutePlan | None
    prefix: PrefixPlan  # prompt-cache predictions of the candidates (long prompts only)
    baseline: ModelSpec | None  # what routing savings are measured against


UNROUTED = Route(None, NO_PREDICTIONS, None)


@dataclass(slots=True)
class Attempt:
    """One try of one model: what was sent, under which response-cache key, what it holds of
    the caller's budget, and when the upstream call started."""

    spec: ModelSpec
    body: dict[str, Any]  # the upstream request: this attempt's own copy of the client's body
    input_tokens: int  # the counted prompt (for the budget hold), 0 when nothing needs it
    deadline: float | None  # the routing deadline (event-loop time); None by name
    breakpoint_added: bool  # the gateway put an Anthropic cache_control breakpoint into `body`
    cache_key: str | None = None  # response-cache key, when the cache may be read or written
    cache_result: str = "bypass"  # x-gateway-cache: hit | miss | bypass
    reservation: Reservation = NO_RESERVATION
    started: float = 0.0  # perf_counter() when the upstream call started
    native: bool = False  # the client's own API request, sent as it is (`gateway/providers/native.py`)
    deferred: bool = False  # sent at the flex service tier by the gateway (`spec` is the model's flex variant)


RequestT = TypeVar("RequestT", ChatRequest, EmbeddingRequest)


@dataclass(slots=True)
class Exchange(Generic[RequestT]):
    """One request (a chat request, or an embeddings request) on its way through the pipeline."""

    request: RequestT
    caller: Caller
    tier: str = ""  # the tier asked for, once the key may use it (a metric label from then on)
    route: Route = UNROUTED
    attempt: Attempt | None = None  # the latest
    failures: tuple[str, ...] = ()  # "model (reason)" of each attempt failed over
    defer: bool = False  # the request may wait: each model that can is called at its flex service tier

    @property
    def model_label(self) -> str:
        return self.attempt.spec.name if self.attempt is not None else "none"

    def route_reason(self) -> str:
        """x-gateway-route (and the ledger's route): why this model, when routed."""
        plan, attempt = self.route.plan, self.attempt
        if plan is None or attempt is None:
            return ""
        return plan.reason(attempt.spec.name, self.failures)

    def headers(self) -> dict[str, str]:
        attempt = self.attempt
        headers = {"x-request-id": self.caller.request_id,
                   "x-gateway-cache": attempt.cache_result if attempt is not None else "bypass"}
        if attempt is not None:
            headers["x-gateway-model"] = attempt.spec.name
            if attempt.reservation.capped:  # the budget could pay for no more than this
                headers["x-gateway-max-tokens"] = str(attempt.reservation.max_output)
        if self.tier:
            headers["x-gateway-tier"] = self.tier
            if self.route.plan is not None and attempt is not None:
                headers["x-gateway-route"] = self.route_reason()
        return headers


class Answer(NamedTuple):
    """A whole chat.completion (with `usage.cost`), from a provider or the response cache; or,
    `native`, the provider's own answer to the client's own API request (cost in its usage)."""

    body: dict[str, Any]
    headers: dict[str, str]
    cost: Cost
    cached: bool  # a response-cache hit (a streaming request then gets it replayed as a stream)
    native: bool = False


class StreamEnd(NamedTuple):
    """The end of a stream that completed: its usage (with `cost`), settled, and the usage chunk
    to send if the client asked for it."""

    usage: dict[str, Any]
    chunk: dict[str, Any]  # an OpenAI chat.completion.chunk with no choices and this usage


StreamEvent = bytes | StreamEnd | GatewayError  # relayed SSE events, then the end or the failure


class Stream(NamedTuple):
    """An open stream: SSE-framed chat.completion.chunk events as they arrive, then a
    `StreamEnd`, or a `GatewayError` if it failed after it started."""

    events: AsyncGenerator[StreamEvent, None]
    headers: dict[str, str]
    native: bool = False  # the provider's own events (the client's API), not chat chunks
