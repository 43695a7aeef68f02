"""The client-APIs part of `gateway demo`: the same gateway (models, keys, budgets, one pricing core)
through the OpenAI Responses API, Anthropic's Messages API sent by the anthropic SDK to an OpenAI
model (translated to chat), and embeddings. Providers are simulated; each usage is scripted in the
wire format the provider speaks, so every figure is fixed."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx
import openai

from gateway.fake_upstream import FakeUpstreamThread

__all__ = ["API_MODELS", "run_apis"]

# Added to the demo's models (name, provider): priced from litellm's table like the others.
API_MODELS = (("text-embedding-3-small", "openai"),)
_CHAT = "gpt-4o-mini"
_EMBED = "text-embedding-3-small"


def _usd(value: Any) -> str:
    return f"{Decimal(str(value)).normalize():f}"


def _costs(header: str, usage: dict[str, Any]) -> str:
    return f"cost ${header} (x-gateway-cost-usd), usage.cost {_usd(usage['cost'])}"


def _responses(client: openai.OpenAI, fake: FakeUpstreamThread) -> None:
    # gpt-4o-mini's provider serves the Responses API itself: the request goes there as sent,
    # and the usage comes back in the Responses convention (cached tokens inside input_tokens).
    fake.script(_CHAT, {"reply": "Paris.", "usage": {
        "input_tokens": 1_200, "input_tokens_details": {"cached_tokens": 1_024}, "output_tokens": 300,
        "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 1_500}})
    raw = client.responses.with_raw_response.create(model=_CHAT, instructions="Answer in one word.",
                                                    input="What is the capital of France?")
    response = raw.parse()
    assert response.usage is not None
    usage = response.usage.model_dump()
    print(f"  POST /v1/responses   (openai SDK, responses.create, {_CHAT}, native): {response.output_text!r}")
    print(f"    input_tokens {usage['input_tokens']} (cached {usage['input_tokens_details']['cached_tokens']}), "
          f"output_tokens {usage['output_tokens']}; {_costs(raw.headers['x-gateway-cost-usd'], usage)}")


def _messages(base_url: str, fake: FakeUpstreamThread) -> None:
    # An OpenAI model behind Anthropic's API: translated to chat and back; the usage comes back in
    # Anthropic's convention (cache reads outside input_tokens).
    fake.script(_CHAT, {"reply": "Bonjour !", "usage": {
        "prompt_tokens": 2_000, "completion_tokens": 120, "total_tokens": 2_120,
        "prompt_tokens_details": {"cached_tokens": 1_536}}})
    request: dict[str, Any] = {"model": _CHAT, "max_tokens": 200, "system": "Translate to French.",
                               "messages": [{"role": "user", "content": "Hello!"}]}
    try:
        import anthropic
    except ImportError:  # the SDK is not a dependency of the gateway: the same request, by hand
        client_name = "httpx; pip install anthropic for the SDK"
        resp = httpx.post(f"{base_url}/v1/messages", json=request, timeout=30,
                          headers={"x-api-key": "demo", "anthropic-version": "2023-06-01"})
        resp.raise_for_status()
        body, header = resp.json(), resp.headers["x-gateway-cost-usd"]
    else:
        client_name = "anthropic SDK, messages.create"
        with anthropic.Anthropic(base_url=base_url, api_key="demo", max_retries=0) as claude:
            raw = claude.messages.with_raw_response.create(**request)
            body, header = raw.parse().model_dump(), raw.headers["x-gateway-cost-usd"]
    usage = body["usage"]
    print(f"  POST /v1/messages    ({client_name}, {_CHAT}, translated): {body['content'][0]['text']!r}")
    print(f"    input_tokens {usage['input_tokens']}, cache_read_input_tokens {usage['cache_read_input_tokens']}, "
          f"output_tokens {usage['output_tokens']}; {_costs(header, usage)}")


def _embeddings(client: openai.OpenAI, fake: FakeUpstreamThread) -> None:
    fake.script(_EMBED, {"usage": {"prompt_tokens": 2_000, "total_tokens": 2_000}})
    raw = client.embeddings.with_raw_response.create(model=_EMBED, input=["opening hours", "return policy"])
    result = raw.parse()
    usage = result.usage.model_dump()
    print(f"  POST /v1/embeddings  (openai SDK, embeddings.create, {_EMBED}): {len(result.data)} vectors "
          f"of {len(result.data[0].embedding)} dimensions")
    print(f"    prompt_tokens {usage['prompt_tokens']}; {_costs(raw.headers['x-gateway-cost-usd'], usage)}")


def run_apis(base_url: str, client: openai.OpenAI, fake: FakeUpstreamThread) -> None:
    print("\nThe other client APIs (the same models, keys, budgets and pricing core):")
    _responses(client, fake)
    _messages(base_url, fake)
    _embeddings(client, fake)
