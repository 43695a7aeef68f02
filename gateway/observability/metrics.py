"""Every Prometheus metric the gateway exports, declared once (names per PRODUCT.md section 6).

Labels are bounded: model and tier are configured names (or "none"), status is an HTTP code,
kind and type come from fixed sets. Never a key, a user or a request id.

With several workers, `PROMETHEUS_MULTIPROC_DIR` is set by `gateway serve` before
prometheus_client is imported; each worker writes its own files and a scrape on any worker
aggregates all of them. Money metrics are `money_metrics` counters and a histogram (integer
pico-USD: `add(labels, pico)`, `observe(labels, pico)`), not prometheus-client's, which add floats.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)

from gateway.money.pricing import Cost, Usage
from gateway.observability.money_metrics import MoneyMetrics

__all__ = ["Metrics"]

_DURATION = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300)
_TTFT = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30)
_RATIO_UNIT = 10**6  # gateway_routing_estimate_ratio counts millionths
_RATIO = (0.25, 0.5, 0.67, 0.8, 0.9, 1.0, 1.1, 1.25, 1.5, 2.0, 4.0)
_OVERHEAD = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)
_COST = (1e-6, 1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 0.01, 0.05, 0.1, 0.5, 1, 5)


class Metrics:
    def __init__(self) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # `_created` series: nobody graphs them
        directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        own = None if directory else CollectorRegistry(auto_describe=True)  # multiprocess: the workers' files
        # Money: exact integer pico-USD sums, in USD at scrape time (see money_metrics).
        self.money = MoneyMetrics(directory)
        self._own = own
        money, counter, histogram = self.money.counter, self._counter, self._histogram

        self.requests = counter("gateway_requests_total", "Chat requests by outcome.", ["model", "tier", "status"])
        self.spend = money("gateway_spend_usd_total", "Spend in USD (service_tier: default | flex | priority | batch).",
                           ["model", "provider", "tier", "team", "service_tier"])
        self.tokens = counter("gateway_tokens_total", "Billed tokens by disjoint bucket.", ["model", "type"])
        self.request_cost = self.money.histogram("gateway_request_cost_usd", "Cost per request in USD.",
                                                 ["model", "tier"], _COST)
        self.duration = histogram("gateway_request_duration_seconds", "Request duration.", ["model"], _DURATION)
        self.ttft = histogram("gateway_upstream_ttft_seconds", "Upstream time to first token.", ["model"], _TTFT)
        self.overhead = histogram("gateway_overhead_seconds", "Time spent in the gateway itself.", [], _OVERHEAD)
        self.upstream_errors = counter("gateway_upstream_errors_total", "Upstream failures by kind.", ["model", "kind"])
        self.failovers = counter("gateway_failovers_total", "Attempts moved on to a tier's next candidate.", ["tier"])
        self.estimate_ratio = self.money.histogram(  # (observed in _RATIO_UNITs: fixed point, like money)
            "gateway_routing_estimate_ratio", "Actual cost / routing's estimate for the model that answered, per "
            "tier request.", ["tier"], _RATIO, unit=_RATIO_UNIT)
        self.routing_saved = money("gateway_routing_saved_usd_total", "What routing saved (reason: tier = the tier's "
                                   "baseline model for the same usage, minus the actual cost; flex = the default "
                                   "service tier's price, minus the flex price paid).", ["tier", "reason"])
        self.flex_fallbacks = counter("gateway_flex_fallbacks_total", "Deferrable requests sent again at the default "
                                      "service tier after a flex 429 (resource unavailable).", ["model"])
        self.cache_requests = counter("gateway_cache_requests_total", "Cache lookups by result.", ["cache", "result"])
        self.cache_saved = money("gateway_cache_saved_usd_total", "What cache hits would have cost.", ["cache"])
        self.cache_write_premium = money("gateway_cache_write_premium_usd_total", "What prompt-cache writes cost "
                                         "above plain input (Anthropic: 1.25x or 2x the input price).", [])
        self.prefix_prediction = counter("gateway_prefix_prediction_tokens_total", "Predicted vs actual cached prompt "
                                         "tokens (outcome: correct | over | under).", ["outcome"])
        self._budget_metrics()
        self.rate_limit_rejections = counter(
            "gateway_rate_limit_rejections_total", "Requests refused by a key's RPM/TPM limit.", ["team"])
        self.cache_errors = counter("gateway_cache_errors_total", "Cache operations that failed (bypassed).", ["cache"])
        self.redis_pool_waits = counter("gateway_redis_pool_waits_total", "Redis commands that waited for a free "
                                        "pooled connection.", [])
        self.in_flight = Gauge("gateway_in_flight_requests", "Chat requests in flight.", registry=own,
                               multiprocess_mode="livesum")  # with several workers: their sum
        self.usage_estimated = counter("gateway_usage_estimated_total", "Requests billed from the gateway's own token "
                                       "count (reason: missing | disconnect | error).", ["model", "reason"])
        gauge = self._gauge
        self.ledger_backlog = gauge("gateway_ledger_backlog_records", "Ledger records not yet written.", ["place"])
        self.spend_drift = gauge("gateway_spend_drift_usd", "Spend that disagrees between Redis, PostgreSQL and the "
                                 "ledger at the last reconciliation, USD.", ["scope", "check"])
        self.unknown_paths = counter("gateway_unknown_path_requests_total", "Requests to a path the gateway does not "
                                     "serve (answered 404), by HTTP method.", ["method"])
        self._registry = self._exporting(own)
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}

    def _counter(self, name: str, doc: str, labels: list[str]) -> Counter:
        return Counter(name, doc, labels, registry=self._own)

    def _gauge(self, name: str, doc: str, labels: list[str]) -> Gauge:
        # Every replica reports the same shared figure: with several workers, show the largest.
        return Gauge(name, doc, labels, registry=self._own, multiprocess_mode="livemax")

    def _histogram(self, name: str, doc: str, labels: list[str], buckets: tuple[float, ...]) -> Histogram:
        return Histogram(name, doc, labels, buckets=buckets, registry=self._own)

    def _budget_metrics(self) -> None:
        gauge = self._gauge
        self.budget_rejections = self._counter(
            "gateway_budget_rejections_total", "Requests refused because a key's or team's budget was spent.", ["team"])
        self.budget_used = gauge("gateway_budget_used_ratio", "Team budget used, (spent + reserved) / budget.",
                                 ["team"])
        self.budget_remaining = gauge("gateway_budget_remaining_usd", "Team budget left in its period, USD.", ["team"])
        self.budget_exhaustion = gauge("gateway_budget_projected_exhaustion_seconds", "Seconds until the team's budget "
                                       "runs out at its recent burn rate (+Inf when it spends nothing).", ["team"])
        self.budget_period_left = gauge("gateway_budget_period_remaining_seconds", "Seconds until the team's "
                                        "budget period ends.", ["team"])

    def _exporting(self, own: CollectorRegistry | None) -> CollectorRegistry:
        """What /metrics renders: this process's metrics, or every worker's (multiprocess)."""
        if own is None:
            own = CollectorRegistry()
            multiprocess.MultiProcessCollector(own)  # type: ignore[no-untyped-call]
        own.register(self.money)
        return own

    def child(self, metric: Any, *labels: str) -> Any:
        """`metric.labels(*labels)`, memoised: label sets are bounded, lookups are hot."""
        key = (id(metric), labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def render(self) -> bytes:
        return generate_latest(self._registry)

    def record_estimate(self, tier: str, actual_pico: int, estimated_pico: int) -> None:
        """One routed request's actual cost over routing's estimate (`estimated_pico` > 0)."""
        self.estimate_ratio.observe((tier,), actual_pico * _RATIO_UNIT // estimated_pico)

    def record_usage(self, model: str, provider: str, tier: str, team: str, usage: Usage, cost: Cost) -> None:
        self.spend.add((model, provider, tier, team, cost.service_tier), cost.total)
        self.request_cost.observe((model, tier), cost.total)
        for bucket, n in (
            ("input", usage.input),
            ("cached_input", usage.cached_input),
            ("cache_write", usage.cache_write_5m + usage.cache_write_1h),
            ("output", usage.output),
            ("reasoning", usage.reasoning),
            ("audio_input", usage.audio_input),
            ("audio_output", usage.audio_output),
        ):
            if n:
                self.child(self.tokens, model, bucket).inc(n)
