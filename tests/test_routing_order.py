"""The router's cost order, reused across requests while it holds, against brute force: every
request's candidates must be exactly what pricing each model for that request gives."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from gateway.cache.prefix_cache import FixedTenant
from gateway.config.schema import parse_config
from gateway.config.settings import resolve_settings
from gateway.money.price_table import load_price_table
from gateway.money.pricing import Usage, estimate_cost
from gateway.pipeline.request import parse_chat_request
from gateway.routing.router import Router
from gateway.tokens.counter import TokenCounter

# (name, quality, input $/Mtok, output $/Mtok): the cheapest flips with the prompt length
MODELS = [("in-cheap", 70, 0.10, 4.00), ("even", 72, 1.00, 1.00), ("out-cheap", 75, 3.00, 0.20),
          ("dear", 90, 5.00, 20.00), ("low", 40, 0.01, 0.01)]


TOKENS = TokenCounter()

def _router() -> Router:
    config = parse_config({
        "models": [{"name": n, "provider": "openai", "api_base": "http://127.0.0.1:9/v1", "api_key": "k",
                    "quality": q, "pricing": {"input_per_mtok": i, "output_per_mtok": o}} for n, q, i, o in MODELS],
        "tiers": {"t": {"min_quality": 60}},
        "routing": {"default_output_tokens": 100, "max_attempts": 2, "explore": {"every": 0}},  # pure order
    })
    settings = resolve_settings(config, load_price_table())
    return Router.offline(settings, TOKENS)


def _brute_force(router: Router, request: Any, limit: int | None) -> list[tuple[str, int]]:
    """Every candidate priced from scratch with its expected output, sorted (the fast path keeps
    orders and their ranges between requests: it must give the same)."""
    tokens = TOKENS.count_messages(request.messages, "in-cheap")
    snapshot = router.state.current(())
    demand = router._demand(request)
    specs = [router._settings.models[n] for n, q, _, _ in MODELS if q >= 60]
    costs = sorted((estimate_cost(s.price, tokens, *router._expect(s, snapshot, demand)[:1]),
                    -(s.quality or 0), s.name) for s in specs)
    return [(name, cost) for cost, _, name in costs][:limit]


def test_every_request_gets_the_order_pricing_gives_it() -> None:
    router = _router()
    tier = router.tier("t")
    assert tier is not None

    async def sweep(flips: set[str]) -> None:
        for max_tokens in (None, 5, 5000):
            for limit in (2, None):
                seen = set()
                for words in (3000, *range(0, 400, 7), *range(400, 0, -13), 3000, 1, 3000):  # up, down, jumps
                    body: dict[str, Any] = {"messages": [{"role": "user", "content": "word " * words}]}
                    if max_tokens:
                        body["max_tokens"] = max_tokens
                    request = parse_chat_request(orjson.dumps({"model": "t", **body}))
                    counts = {enc: TOKENS.count_messages_in(request.messages, enc) for enc in router.encodings(tier)}
                    plan = await router.plan(tier, request, counts, FixedTenant("test"), limit)
                    got = [(c.model, c.estimated_cost_pico) for c in plan.ranked]
                    assert got == _brute_force(router, request, limit), (max_tokens, limit, words)
                    assert plan.count == 4 and {e.model for e in plan.excluded} == {"low"}
                    seen.add(got[0][0])
                if max_tokens is None:
                    assert seen == flips

    asyncio.run(sweep({"out-cheap", "even", "in-cheap"}))  # the choice flips with the prompt length
    request = parse_chat_request(b'{"model": "t", "messages": [{"role": "user", "content": "word word"}]}')
    models = router._settings.models
    for _ in range(3):  # learned outputs: in-cheap writes long answers, out-cheap short ones (within 2x
        router.observe(models["in-cheap"], request, Usage(input=5, output=4000))  # of the others: the
        router.observe(models["out-cheap"], request, Usage(input=5, output=3))  # choice still flips)
        asyncio.run(sweep({"out-cheap", "even", "in-cheap"}))
