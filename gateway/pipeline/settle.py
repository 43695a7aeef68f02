"""After a call: turn what the upstream reported (or, failing that, our own count) into a priced,
recorded usage. Upstream usage always wins; the fallback is counted in
`gateway_usage_estimated_total{reason}` so it stays visible."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from gateway.money.pricing import Cost, Usage, price_usage
from gateway.pipeline.exchange import Call

__all__ = ["Settled", "settle"]


@dataclass(frozen=True, slots=True)
class Settled:
    usage: Usage
    usage_dict: dict[str, Any]  # OpenAI-convention usage shown to the client
    cost: Cost

    def client_usage(self) -> dict[str, Any]:
        return {**self.usage_dict, **self.cost.usage_fields()}


def settle(
    call: Call,
    usage: Usage | None,
    usage_dict: dict[str, Any] | None,
    produced_text: Callable[[], str],
    reason: str,
    complete: bool = True,
    status: str = "200",
) -> Settled:
    """Price and record one call: metrics, budgets, spend aggregates and the ledger (`status`:
    how the request ended). `complete=False` (a stream that broke or was abandoned): keep
    the upstream's input figures but count the output ourselves if that is larger."""
    state, spec = call.state, call.spec
    assert spec is not None
    metrics = state.metrics
    if usage is not None and usage_dict is not None and not complete:
        counted = state.tokens.count_text(produced_text(), spec.upstream_model)
        if counted > usage.completion_tokens:
            usage = replace(usage, output=counted - usage.reasoning)
            usage_dict = usage.to_openai()
        metrics.child(metrics.usage_estimated, spec.name, reason).inc()
    elif usage is None or usage_dict is None:
        prompt = state.tokens.count_messages(call.body["messages"], spec.upstream_model, call.body.get("tools"))
        output = state.tokens.count_text(produced_text(), spec.upstream_model)
        usage = Usage(input=prompt, output=output)
        usage_dict = usage.to_openai()
        metrics.child(metrics.usage_estimated, spec.name, reason).inc()
    cost = price_usage(usage, spec.price)
    metrics.record_usage(spec.name, spec.provider, call.tier, call.team, usage, cost)
    saved = 0
    if call.baseline is not None:  # what the tier's baseline would have cost for the same usage
        saved = max(price_usage(usage, call.baseline.price).total - cost.total, 0)
        if saved > 0:
            metrics.routing_saved.add((call.tier,), saved)
    state.ledger.add(call.ledger_record(usage, cost, status, routing_saved=saved))
    state.prefix.settle(spec, call.prefix, usage)  # a cut-off stream's prompt was still read (and cached)
    state.access.settle(call.grant, spec, call.tier, cost.total, usage.prompt_tokens + usage.completion_tokens)
    if complete:
        state.router.observe_output(spec.name, usage.completion_tokens)
    return Settled(usage, usage_dict, cost)
