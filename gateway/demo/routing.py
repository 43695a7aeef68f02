"""The routed half of `gateway demo`: requests that name a tier, what the router chose and why,
and the savings against always using the tier's premium baseline. Providers are simulated."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import openai

from gateway.config.settings import Settings
from gateway.fake_upstream import FakeUpstreamThread
from gateway.money.pricing import Usage, price_usage

__all__ = ["ROUTED_MODELS", "run_routed"]

# Models the router may choose from (name, provider); quality scores come from the catalog.
ROUTED_MODELS = (("gpt-4.1-mini", "openai"), ("gpt-4.1", "openai"), ("o3", "openai"), ("deepseek-chat", "deepseek"),
                 ("gpt-5.1", "openai"))


@dataclass(frozen=True)
class RoutedStep:
    label: str
    tier: str
    prompt_words: int
    completion: int
    max_tokens: int | None = None


ROUTED = (
    RoutedStep("Classify a support ticket", "economy", 600, 5),
    RoutedStep("Summarise a long report", "standard", 9_000, 300),
    RoutedStep("Draft a long answer (max_tokens 3000)", "standard", 200, 2_800, 3_000),
    RoutedStep("Hard reasoning question", "premium", 1_500, 1_200),
)


def _usd(value: Decimal) -> str:
    return f"{value.normalize():f}"


def run_routed(client: openai.OpenAI, fake: FakeUpstreamThread, settings: Settings, saved: Callable[[], str]) -> None:
    """`saved` reads gateway_routing_saved_usd_total from /metrics after the run."""
    print("\nRouted by tier (model = tier name; the cheapest model meeting the tier's quality wins):")
    print("{:>2}  {:38} {:9} {:14} {:>11} {:>14}  {}".format("#", "request", "tier", "chosen", "cost USD",
                                                          "baseline USD", "why (x-gateway-route)"))
    total = baseline_total = Decimal(0)
    baselines: set[str] = set()
    for i, step in enumerate(ROUTED, 1):
        usage = {"prompt_tokens": step.prompt_words + 8, "completion_tokens": step.completion}
        for spec in settings.models.values():
            fake.script(spec.upstream_model, {"output_tokens": 12, "usage": usage})
        kwargs: dict[str, Any] = {"max_tokens": step.max_tokens} if step.max_tokens else {}
        raw = client.chat.completions.with_raw_response.create(
            model=step.tier, messages=[{"role": "user", "content": "word " * step.prompt_words}], **kwargs)
        cost = Decimal(raw.headers["x-gateway-cost-usd"])
        tier = settings.tiers[step.tier]
        baseline = max((m for m in settings.models.values() if (m.quality or 0) >= tier.min_quality),
                       key=lambda m: (m.quality or 0, m.price.base.output))
        base_cost = price_usage(Usage.from_openai(usage), baseline.price).usd
        baselines.add(baseline.name)
        total, baseline_total = total + cost, baseline_total + base_cost
        print(f"{i:>2}  {step.label:38} {step.tier:9} {raw.headers['x-gateway-model']:14} {_usd(cost):>11} "
              f"{_usd(base_cost):>14}  {raw.headers['x-gateway-route']}")
    print(f"\nRouted total ${_usd(total)}; always using each tier's best model ({', '.join(sorted(baselines))}) "
          "would have cost "
          f"${_usd(baseline_total)}: saved ${_usd(baseline_total - total)}.")
    print(f"Prometheus agrees: sum of gateway_routing_saved_usd_total = ${saved()}")
