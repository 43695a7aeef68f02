"""The books: after an attempt, turn what the upstream reported (or, failing that, our own count)
into one priced usage and record it everywhere it belongs, in one call (`Books.settle`): the
money metrics, the tier's routing savings, the spend ledger and the daily aggregates, the prompt-
prefix index, the caller's budget and rate limit, and what routing learns. Upstream usage always
wins; the fallback is counted in `gateway_usage_estimated_total{reason}` so it stays visible.

Also the per-request metrics (count, duration, the gateway's own overhead) and upstream failures.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from time import perf_counter
from typing import Any, Protocol

from gateway.access.gate import Access
from gateway.cache.prefix_cache import PrefixCache
from gateway.errors import GatewayError
from gateway.ledger.spend_stats import SpendStats
from gateway.ledger.store import Ledger, LedgerRecord
from gateway.money.pricing import Cost, Usage, price_usage
from gateway.observability.metrics import Metrics
from gateway.pipeline.exchange import Attempt, Exchange
from gateway.pipeline.request import ChatRequest
from gateway.routing.router import Router
from gateway.runtime.background import Background
from gateway.tokens.counter import TokenCounter

__all__ = ["Billable", "Books", "Settled"]

log = logging.getLogger("gateway.requests")


class Billable(Protocol):
    """What an upstream call produced: a `Completion` or an `UpstreamStream`."""

    usage: Usage | None  # None when the upstream reported none
    usage_dict: dict[str, Any] | None

    def produced_text(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Settled:
    usage: Usage
    usage_dict: dict[str, Any]  # OpenAI-convention usage shown to the client
    cost: Cost

    def client_usage(self) -> dict[str, Any]:
        return {**self.usage_dict, **self.cost.usage_fields()}


@dataclass
class Books:
    tokens: TokenCounter
    metrics: Metrics
    ledger: Ledger
    stats: SpendStats
    prefix: PrefixCache
    access: Access
    router: Router
    background: Background

    def settle(self, exchange: Exchange[Any], attempt: Attempt, result: Billable, reason: str, complete: bool = True,
               status: str = "200") -> Settled:
        """Price and record one attempt's usage (`status`: how the request ended).
        `complete=False` (a stream that broke or was abandoned): keep the upstream's input
        figures but count the output ourselves if that is larger."""
        usage, usage_dict = self._usage(attempt, result, reason, complete)
        spec, tier, metrics = attempt.spec, exchange.tier, self.metrics
        cost = price_usage(usage, spec.price)
        metrics.record_usage(spec.name, spec.provider, tier, exchange.caller.team, usage, cost)
        saved = self._saved(exchange, attempt, usage, cost) if exchange.route.baseline or attempt.deferred else 0
        now = datetime.now(UTC)
        self.ledger.add(self._record(exchange, attempt, now, usage, cost, status, routing_saved=saved))
        key = exchange.caller.grant.key
        self.background.spawn(self.stats.add(now, cost.total, model=spec.name, tier=tier,
                                             key=key.id if key else "", team=exchange.caller.team))
        self.prefix.settle(spec, exchange.route.prefix, attempt.breakpoint_added, usage)  # a cut-off prompt was read
        self.access.settle(exchange.caller.grant, attempt.reservation, cost.total,
                           usage.prompt_tokens + usage.completion_tokens, now)
        if complete and isinstance(exchange.request, ChatRequest):  # (what routing learns from)
            self.router.observe(spec, exchange.request, usage)
            self._estimate_accuracy(exchange, spec.name, cost.total)
        return Settled(usage, usage_dict, cost)

    def _saved(self, exchange: Exchange[Any], attempt: Attempt, usage: Usage, cost: Cost) -> int:
        """What routing saved, counted by reason: `tier`, the tier's baseline model for the same
        usage minus the model that answered; `flex`, the default service tier's price minus the
        flex price the gateway sent a deferrable request at. Both at the default tier when the
        request went at flex, so that no saving is counted twice."""
        metrics, tier, spec = self.metrics, exchange.tier, attempt.spec
        flex = attempt.deferred and cost.service_tier == "flex"
        same = replace(usage, service_tier="default") if flex else usage
        paid = price_usage(same, spec.price).total if flex else cost.total
        saved = 0
        if flex and paid > cost.total:
            metrics.routing_saved.add((tier, "flex"), paid - cost.total)
            saved = paid - cost.total
        baseline = exchange.route.baseline
        if baseline is not None:  # what the tier's baseline would have cost for the same usage
            by_tier = price_usage(same, baseline.price).total - paid
            if by_tier > 0:
                metrics.routing_saved.add((tier, "tier"), by_tier)
                saved += by_tier
        return saved

    def flex_fell_back(self, exchange: Exchange[Any], exc: GatewayError) -> None:
        """A deferrable request's flex call found no flex capacity (429): it goes again at the
        default service tier."""
        attempt = exchange.attempt
        assert attempt is not None
        self.metrics.child(self.metrics.flex_fallbacks, attempt.spec.name).inc()
        log.info("request %s: flex capacity unavailable for %s, sent at the default tier: %s",
                 exchange.caller.request_id, attempt.spec.name, exc.message)

    def _estimate_accuracy(self, exchange: Exchange[Any], model: str, actual: int) -> None:
        """How far routing's estimate was from what the answer cost (tier requests)."""
        plan = exchange.route.plan
        if plan is None:
            return
        first = plan.first
        chosen = first if first.model == model else next((c for c in plan.ranked if c.model == model), None)
        if chosen is not None and chosen.estimated_cost_pico > 0:
            self.metrics.record_estimate(exchange.tier, actual, chosen.estimated_cost_pico)

    def _usage(self, attempt: Attempt, result: Billable, reason: str, complete: bool) -> tuple[Usage, dict[str, Any]]:
        spec, metrics = attempt.spec, self.metrics
        usage, usage_dict = result.usage, result.usage_dict
        if usage is not None and usage_dict is not None and not complete:
            counted = self.tokens.count_text(result.produced_text(), spec.upstream_model)
            if counted > usage.completion_tokens:
                usage = replace(usage, output=counted - usage.reasoning)
                usage_dict = usage.to_openai()
            metrics.child(metrics.usage_estimated, spec.name, reason).inc()
        elif usage is None or usage_dict is None:
            body = attempt.body
            prompt = self.tokens.count_messages(body["messages"], spec.upstream_model, body.get("tools")) \
                if "messages" in body else attempt.input_tokens  # (embeddings: their counted input)
            usage = Usage(input=prompt, output=self.tokens.count_text(result.produced_text(), spec.upstream_model))
            usage_dict = usage.to_openai()
            metrics.child(metrics.usage_estimated, spec.name, reason).inc()
        return usage, usage_dict

    def hit(self, exchange: Exchange[Any], attempt: Attempt, saved_pico: int) -> None:
        """An answer from the response cache: $0 in the ledger, what it saved counted."""
        self.metrics.cache_saved.add(("response",), saved_pico)
        self.ledger.add(self._record(exchange, attempt, datetime.now(UTC), Usage(), Cost(), "200",
                                     cache_saved=saved_pico))
        self.finished(exchange, "200")

    def _record(self, exchange: Exchange[Any], attempt: Attempt, at: datetime, usage: Usage, cost: Cost, status: str,
                routing_saved: int = 0, cache_saved: int = 0) -> LedgerRecord:
        spec, key = attempt.spec, exchange.caller.grant.key
        return LedgerRecord(
            at.isoformat(timespec="microseconds"), exchange.caller.request_id,
            key.id if key else "", (key.alias or "") if key else "", exchange.caller.team, spec.name, spec.provider,
            exchange.tier, usage.input, usage.cached_input, usage.cache_write_5m + usage.cache_write_1h, usage.output,
            usage.reasoning, cost.input, cost.cached_input, cost.cache_write, cost.output, cost.reasoning,
            cost.total, attempt.cache_result, exchange.route_reason(), status,
            round((perf_counter() - exchange.caller.arrived) * 1000, 3), routing_saved, cache_saved,
            usage.audio_input + usage.audio_output, cost.audio, cost.service_tier,
        )

    def finished(self, exchange: Exchange[Any], status: str, upstream_time: float = 0.0) -> None:
        """Request count, duration and the gateway's own overhead."""
        metrics, attempt = self.metrics, exchange.attempt
        now = perf_counter()
        metrics.child(metrics.requests, exchange.model_label, exchange.tier, status).inc()
        if attempt is not None:
            took = now - exchange.caller.arrived
            metrics.child(metrics.duration, attempt.spec.name).observe(took)
            if status == "200":
                self.router.observe_latency(attempt.spec.name, took)
            metrics.overhead.observe(max(took - upstream_time, 0.0))

    def upstream_failed(self, exchange: Exchange[Any], exc: GatewayError) -> None:
        attempt = exchange.attempt
        if exc.kind is not None and attempt is not None:
            metrics = self.metrics
            metrics.child(metrics.upstream_errors, attempt.spec.name, exc.kind).inc()
            log.warning("request %s: %s (%s)", exchange.caller.request_id, exc.message, exc.kind)

    def failed_over(self, exchange: Exchange[Any], exc: GatewayError) -> None:
        """An attempt failed and the next candidate gets the request."""
        self.upstream_failed(exchange, exc)
        self.metrics.child(self.metrics.failovers, exchange.tier).inc()

    def failed(self, exchange: Exchange[Any], exc: GatewayError) -> None:
        self.upstream_failed(exchange, exc)
        self.finished(exchange, str(exc.status_code))
