"""After a call: turn what the upstream reported (or, failing that, our own count) into a priced,
recorded usage. Upstream usage always wins; the fallback is counted in
`gateway_usage_estimated_total{reason}` so it stays visible."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from gateway.pricing import Cost, Usage, price_usage
from gateway.settings import ModelSpec
from gateway.state import AppState

__all__ = ["Settled", "settle"]


@dataclass(frozen=True, slots=True)
class Settled:
    usage: Usage
    usage_dict: dict[str, Any]  # OpenAI-convention usage shown to the client
    cost: Cost
    estimated: bool

    def client_usage(self) -> dict[str, Any]:
        return {**self.usage_dict, **self.cost.usage_fields()}


def settle(
    state: AppState,
    spec: ModelSpec,
    body: dict[str, Any],
    usage: Usage | None,
    usage_dict: dict[str, Any] | None,
    produced_text: Callable[[], str],
    reason: str,
    tier: str = "",
    team: str = "",
    complete: bool = True,
) -> Settled:
    """Price and record one call. `complete=False` (a stream that broke or was abandoned): keep
    the upstream's input figures but count the output ourselves if that is larger."""
    estimated = usage is None or usage_dict is None or not complete
    if usage is not None and usage_dict is not None and not complete:
        counted = state.tokens.count_text(produced_text(), spec.upstream_model)
        if counted > usage.completion_tokens:
            usage = replace(usage, output=counted - usage.reasoning)
            usage_dict = usage.to_openai()
        state.metrics.child(state.metrics.usage_estimated, spec.name, reason).inc()
    elif usage is None or usage_dict is None:
        prompt = state.tokens.count_messages(body["messages"], spec.upstream_model, body.get("tools"))
        output = state.tokens.count_text(produced_text(), spec.upstream_model)
        usage = Usage(input=prompt, output=output)
        usage_dict = usage.to_openai()
        state.metrics.child(state.metrics.usage_estimated, spec.name, reason).inc()
    cost = price_usage(usage, spec.price)
    state.metrics.record_usage(spec.name, spec.provider, tier, team, usage, cost)
    return Settled(usage, usage_dict, cost, estimated)
