"""The learned policy's decision cost: CPU time of `Router.plan` for the auto tier (the learned
policy, 8 candidates) per request, for prompts of about 200 and 4,000 tokens, each prompt new
(so its token ids are computed, not remembered), beside the same tier with `cheapest`.

    python bench/router_decision.py [--router FILE] [--requests 300]

Prints p50 and p90 in ms for each prompt length and policy, and the learned policy's own part
(the plan's time minus the cheapest plan's). Targets (issue 15): p50 <= 0.5 ms for 200 tokens,
<= 1.5 ms for 4,000 tokens.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
from typing import Any

from gateway.cache.prefix_cache import FixedTenant
from gateway.config.schema import parse_config
from gateway.config.settings import resolve_settings
from gateway.money.price_table import load_price_table
from gateway.pipeline.request import parse_chat_request
from gateway.routing.router import Router
from gateway.tokens.counter import TokenCounter

MODELS = (("gpt-4o-2024-05-13", 60.2, 5, 15), ("gemini-1.5-pro-002", 64, 1.25, 5), ("jamba-1.5-large", 47.6, 2, 8),
          ("llama-3.1-70b-instruct", 52.4, 0.88, 0.88), ("gemini-1.5-flash-002", 57.5, 0.075, 0.3),
          ("llama-3.1-8b-instruct", 37.6, 0.18, 0.18), ("mixtral-8x7b-instruct-v0.1", 26.6, 0.6, 0.6),
          ("claude-like", 70, 3, 15))
WORDS = ("the", "integral", "of", "protein", "court", "ruling", "momentum", "market", "price", "cell", "which",
         "option", "best", "describes", "energy", "law", "history", "tax", "enzyme", "theorem")


def config(router: str | None) -> dict[str, Any]:
    models = [{"name": n, "provider": "openai", "api_key": "k", "quality": q,
               "pricing": {"input_per_mtok": i, "output_per_mtok": o}} for n, q, i, o in MODELS]
    auto: dict[str, Any] = {"policy": "learned", "baseline_model": "gpt-4o-2024-05-13"}
    if router:
        auto["router_model"] = router
    return {"models": models, "tiers": {"auto": auto, "cheap": {"min_quality": 0}}}


def prompt(rng: random.Random, words: int) -> bytes:
    text = " ".join(rng.choice(WORDS) for _ in range(words)) + f" {rng.random()}?"
    return ('{"model": "auto", "messages": [{"role": "user", "content": "' + text + '"}]}').encode()


async def measure(router: Router, tier: str, bodies: list[bytes], tokens: TokenCounter) -> list[float]:
    spec = router.tier(tier)
    assert spec is not None
    took = []
    for body in bodies:
        request = parse_chat_request(body)
        counts = {enc: tokens.count_messages_in(request.messages, enc) for enc in router.encodings(spec)}
        start = time.process_time()
        await router.plan(spec, request, counts, FixedTenant("bench"))
        took.append((time.process_time() - start) * 1000)
    return took


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--router")
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    tokens = TokenCounter()
    settings = resolve_settings(parse_config(config(args.router)), load_price_table())
    router = Router.offline(settings, tokens)
    for words, label in ((190, "~200 tokens"), (3900, "~4,000 tokens")):
        rng = random.Random(words)
        results = {}
        for tier in ("auto", "cheap"):
            bodies = [prompt(rng, words) for _ in range(args.requests)]
            asyncio.run(measure(router, tier, bodies[:20], tokens))  # warm-up
            results[tier] = asyncio.run(measure(router, tier, bodies, tokens))
        p50 = {t: statistics.median(v) for t, v in results.items()}
        p90 = {t: statistics.quantiles(v, n=10)[-1] for t, v in results.items()}
        print(f"{label}: learned plan p50 {p50['auto']:.3f} ms p90 {p90['auto']:.3f} ms; cheapest plan p50 "
              f"{p50['cheap']:.3f} ms; the learned policy's part p50 {p50['auto'] - p50['cheap']:.3f} ms")


if __name__ == "__main__":
    main()
