"""The caching part of `gateway demo`: the gateway's own response cache, and an Anthropic
conversation whose long system prompt gets a cache breakpoint from the gateway once it has seen
it before. Providers are simulated; the write and read usage is scripted as Anthropic reports it."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import openai

from gateway.cache.prefix_blocks import prompt_blocks
from gateway.fake_upstream import FakeUpstreamThread
from gateway.tokens.counter import TokenCounter

__all__ = ["run_cached"]

Scrape = Callable[[str, str], float]  # (metric name, label text such as 'cache="response"') -> summed value
_POLICY = ("You are the support agent of a hardware store. Answer in two sentences, cite the policy "
           "section you used, never promise refunds outside the 30-day window. ") * 40
CLAUDE = "claude-sonnet-4-5"


def _usd(value: Any) -> str:
    return f"{Decimal(str(value)).normalize():f}"


def _response_cache(client: openai.OpenAI, fake: FakeUpstreamThread, scrape: Scrape) -> None:
    print("\nResponse cache (identical deterministic request, temperature 0):")
    fake.script("gpt-4o-mini", {"output_tokens": 12, "usage": {"prompt_tokens": 1_200, "completion_tokens": 150,
                                                                "total_tokens": 1_350}})
    before = len(fake.calls("gpt-4o-mini"))
    for attempt in ("first", "second"):
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", temperature=0, messages=[{"role": "user", "content": "What are your opening hours?"}])
        print(f"  {attempt:7} x-gateway-cache: {raw.headers['x-gateway-cache']:5} "
              f"cost ${raw.headers['x-gateway-cost-usd']}")
    saved = scrape("gateway_cache_saved_usd_total", 'cache="response"')
    print(f"  upstream called {len(fake.calls('gpt-4o-mini')) - before} time(s); saved ${saved:.7f} "
          "(gateway_cache_saved_usd_total)")


def _anthropic_prefix(client: openai.OpenAI, fake: FakeUpstreamThread, scrape: Scrape) -> None:
    print(f"\nPrompt-prefix cache ({CLAUDE}, a {len(_POLICY.split())}-word system prompt, three questions):")
    premium_before = scrape("gateway_cache_write_premium_usd_total", "")
    saved_before = scrape("gateway_cache_saved_usd_total", 'cache="prefix"')
    stable = prompt_blocks(TokenCounter(), {"messages": [{"role": "system", "content": _POLICY},
                                                         {"role": "user", "content": "?"}]}, "o200k_base").stable_tokens
    turns = (("Can I return a drill after 40 days?", {"input_tokens": stable + 12}),
             ("And a saw bought last week?", {"input_tokens": 12, "cache_creation_input_tokens": stable}),
             ("Do you sell gift cards?", {"input_tokens": 10, "cache_read_input_tokens": stable}))
    for question, usage in turns:
        fake.script(CLAUDE, {"output_tokens": 12, "usage": {**usage, "output_tokens": 40}})
        raw = client.chat.completions.with_raw_response.create(
            model=CLAUDE, max_tokens=200,
            messages=[{"role": "system", "content": _POLICY}, {"role": "user", "content": question}])
        sent = fake.calls(CLAUDE)[-1]["body"]
        marked = "breakpoint added" if "cache_control" in sent["system"][-1] else "no breakpoint   "
        usage_out = raw.parse().usage
        assert usage_out is not None and usage_out.prompt_tokens_details is not None
        print(f"  {question:38} {marked}  prompt {usage_out.prompt_tokens:>5}  "
              f"cached {usage_out.prompt_tokens_details.cached_tokens:>5}  cost ${raw.headers['x-gateway-cost-usd']}")
    premium = scrape("gateway_cache_write_premium_usd_total", "") - premium_before
    saved = scrape("gateway_cache_saved_usd_total", 'cache="prefix"') - saved_before
    print(f"  in these three: write premium paid ${premium:.7f}, read savings ${saved:.7f}, net ${saved - premium:.7f}")
    print("  (from /metrics: gateway_cache_write_premium_usd_total, gateway_cache_saved_usd_total{cache=\"prefix\"})")


def run_cached(client: openai.OpenAI, fake: FakeUpstreamThread, scrape: Scrape) -> None:
    _response_cache(client, fake, scrape)
    _anthropic_prefix(client, fake, scrape)
