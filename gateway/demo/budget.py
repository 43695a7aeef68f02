"""The budget part of `gateway demo`: a virtual key with a small budget, created through the admin
API, spends until what is left cannot pay a request's worst case (its max_tokens is then lowered
to what the budget can pay), then until the gateway refuses it (429 budget_exceeded) before
calling any provider. Providers are simulated; the key lives in the in-process memory backend."""

from __future__ import annotations

from typing import Any

import httpx
import openai

from gateway.fake_upstream import FakeUpstreamThread

__all__ = ["MASTER_KEY", "run_budget"]

MASTER_KEY = "demo-master-key"
_MODEL = "gpt-4o-mini"


def run_budget(base_url: str, fake: FakeUpstreamThread) -> None:
    print("\nBudgets (a virtual key with $0.0017 to spend, 3,000-token prompts, max_tokens 500):")
    admin = {"Authorization": f"Bearer {MASTER_KEY}"}
    created = httpx.post(f"{base_url}/admin/keys", headers=admin,
                         json={"alias": "demo-intern", "team": "demo", "budget_usd": "0.0017"}).json()
    print(f"  POST /admin/keys -> {created['id']} (secret shown once: {created['key'][:10]}...)")
    fake.script(_MODEL, {"output_tokens": 12, "usage": {"prompt_tokens": 3_000, "completion_tokens": 150,
                                                         "total_tokens": 3_150}})
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key=created["key"], max_retries=2)
    prompt: Any = [{"role": "user", "content": "Summarise this. " + "lorem " * 2_990}]
    calls_before = len(fake.calls(_MODEL))
    for i in range(1, 10):
        try:
            raw = client.chat.completions.with_raw_response.create(model=_MODEL, messages=prompt, max_tokens=500)
        except openai.RateLimitError as exc:
            print(f"  request {i}: 429 {exc.code}: {exc.response.json()['error']['message']}")
            break
        capped = raw.headers.get("x-gateway-max-tokens")
        note = f" (max_tokens lowered to {capped}: what the budget can still pay)" if capped else ""
        print(f"  request {i}: 200, cost ${raw.headers['x-gateway-cost-usd']}{note}")
    spend = httpx.get(f"{base_url}/v1/spend", headers={"Authorization": f"Bearer {created['key']}"}).json()
    print(f"  GET /v1/spend: spent ${spend['spend_usd']:.6f} of ${spend['budget_usd']}, remaining "
          f"${spend['remaining_usd']:.6f}; upstream called {len(fake.calls(_MODEL)) - calls_before} times "
          "(the refused request never reached it, and the client did not retry it)")
