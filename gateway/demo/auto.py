"""The auto tier in `gateway demo`: a replayed slice of public per-prompt outcomes (MMLU-Pro,
eight models; rows held out from the shipped router's training), sent through a second gateway
whose simulated providers answer each prompt with the token counts the real models wrote. Each
tier's quality is the share of the reference model's correct answers its chosen models gave;
its cost is what the gateway billed."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from types import MappingProxyType

import openai

from gateway.config.schema import parse_config
from gateway.config.settings import Settings, resolve_settings
from gateway.fake_upstream import FakeUpstreamThread
from gateway.money.price_table import load_price_table
from gateway.routing.auto.data import OutcomeSet, load_outcomes, rating_for

__all__ = ["REPLAY", "replay_settings", "run_auto"]

REPLAY = Path(__file__).with_name("replay_mmlupro.csv.gz")
REFERENCE = "gpt-4o-2024-05-13"
_TIERS = MappingProxyType({"auto": {"policy": "learned", "quality_floor": 0.95, "baseline_model": REFERENCE},
                           "economy": {"min_quality": 45}, "standard": {"min_quality": 60}})


def replay_settings(fake: FakeUpstreamThread, data: OutcomeSet) -> Settings:
    """The slice's models behind the fake, at the prices the pricing core gives them, quality from
    their arena ratings (the catalog's scale), and the tiers to compare."""
    models = []
    for name, price in zip(data.models, data.prices, strict=True):
        rating = rating_for(name, "overall") or 1000.0
        per_mtok = [f"{Decimal(p).scaleb(-6).normalize():f}" for p in (price.base.input, price.base.output)]
        models.append({"name": name, "provider": "openai", "api_base": fake.url + "/v1", "api_key": "simulated-key",
                       "quality": round((rating - 1000) / 5, 1), "upstream_model": f"replay-{name}",
                       "pricing": {"input_per_mtok": per_mtok[0], "output_per_mtok": per_mtok[1]}})
    config = {"models": models, "tiers": dict(_TIERS), "cache": {"response": {"enabled": False}},
              "storage": {"backend": "memory"}}
    return resolve_settings(parse_config(config, "demo"), load_price_table(), "demo")


def load_replay() -> OutcomeSet:
    return load_outcomes(REPLAY, load_price_table())


def run_auto(client: openai.OpenAI, fake: FakeUpstreamThread, data: OutcomeSet) -> dict[str, tuple[float, Decimal]]:
    """Send every prompt of `data` to each tier and to the reference by name; print and return
    each one's (quality as a share of the reference's, cost)."""
    asked = [*_TIERS, REFERENCE]
    right = dict.fromkeys(asked, 0.0)
    cost = dict.fromkeys(asked, Decimal(0))
    for i, prompt in enumerate(data.prompts):
        for j, name in enumerate(data.models):
            usage = {"prompt_tokens": int(data.input_tokens[i]), "completion_tokens": int(data.output_tokens[i, j])}
            fake.script(f"replay-{name}", {"output_tokens": 5, "usage": usage})
        for model in asked:
            raw = client.chat.completions.with_raw_response.create(
                model=model, messages=[{"role": "user", "content": prompt}])
            chosen = data.models.index(raw.headers["x-gateway-model"])
            right[model] += float(data.correct[i, chosen])
            cost[model] += Decimal(raw.headers["x-gateway-cost-usd"])
    found = {model: (right[model] / right[REFERENCE], cost[model]) for model in asked}
    _print(found, len(data.prompts))
    return found


def _print(found: dict[str, tuple[float, Decimal]], n: int) -> None:
    print(f"\nThe auto tier on a replayed slice ({n} MMLU-Pro questions held out from the router's training; "
          f"reference {REFERENCE}):")
    print(f"  {'asked for':26} {'quality vs reference':>21} {'cost USD':>14} {'saved vs reference':>19}")
    base = found[REFERENCE][1]
    for model, (quality, spent) in found.items():
        saved = f"{100 * float((base - spent) / base):.1f} %" if base else "-"
        print(f"  {model:26} {100 * quality:20.1f} % {spent.normalize():>14f} {saved:>19}")
    print("  (quality: correct answers of the chosen models / the reference's; on 120 questions a share moves by about "
          "5 points by chance: the held-out figures over 5,881 are in docs/routing.md)")
