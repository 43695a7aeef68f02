"""OpenAI-format upstreams through the official openai client: completions, streams, exact cost."""

from __future__ import annotations

from typing import Any

from conftest import UPSTREAM_KEY, Gateway

from gateway.fake_upstream import FakeUpstreamThread

MESSAGES: list[Any] = [{"role": "user", "content": "Say hello"}]
CACHED_USAGE = {
    "prompt_tokens": 2000,
    "completion_tokens": 300,
    "total_tokens": 2300,
    "prompt_tokens_details": {"cached_tokens": 1500},
    "completion_tokens_details": {"reasoning_tokens": 0},
}
# 500 uncached x $2.50/M + 1,500 cached x $1.25/M + 300 output x $10/M
CACHED_COST = 0.006125


def test_non_stream_with_cached_tokens_is_priced_exactly(gateway: Gateway, upstream: FakeUpstreamThread) -> None:
    upstream.script("gpt-4o-test", {"reply": "Hello!", "usage": CACHED_USAGE})
    spend_before = gateway.metric("gateway_spend_usd_total", model="gpt-test")
    raw = gateway.client().chat.completions.with_raw_response.create(model="gpt-test", messages=MESSAGES)
    completion = raw.parse()

    assert completion.choices[0].message.content == "Hello!"
    assert raw.headers["x-gateway-cost-usd"] == "0.006125"
    assert raw.headers["x-gateway-model"] == "gpt-test"
    assert raw.headers["x-gateway-cache"] == "bypass"
    assert len(raw.headers["x-request-id"]) == 32
    usage = completion.usage.model_dump()
    assert usage["prompt_tokens"] == 2000 and usage["completion_tokens"] == 300
    assert usage["prompt_tokens_details"]["cached_tokens"] == 1500
    assert usage["cost"] == CACHED_COST
    assert usage["cost_details"] == {
        "input": 0.00125, "cached_input": 0.001875, "cache_write": 0.0, "output": 0.003, "reasoning": 0.0,
    }
    assert round(gateway.metric("gateway_spend_usd_total", model="gpt-test") - spend_before, 12) == CACHED_COST

    call = upstream.calls("gpt-4o-test")[-1]
    assert call["body"]["model"] == "gpt-4o-test"
    assert call["headers"]["authorization"] == f"Bearer {UPSTREAM_KEY}"


def test_stream_costs_the_same_as_non_stream(gateway: Gateway, upstream: FakeUpstreamThread) -> None:
    upstream.script("gpt-4o-test", {"reply": "one two three", "usage": CACHED_USAGE})
    stream = gateway.client().chat.completions.create(
        model="gpt-test", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "one two three"
    final = chunks[-1]
    assert final.choices == []
    usage = final.usage.model_dump()
    assert usage["cost"] == CACHED_COST
    assert usage["prompt_tokens_details"]["cached_tokens"] == 1500
    assert sum(1 for c in chunks if c.usage is not None) == 1


def test_stream_without_include_usage_gets_no_usage_chunk_but_is_still_billed(
    gateway: Gateway, upstream: FakeUpstreamThread
) -> None:
    upstream.script("gpt-4o-test", {"reply": "a b", "usage": CACHED_USAGE})
    tokens_before = gateway.metric("gateway_tokens_total", model="gpt-test", type="cached_input")
    chunks = list(gateway.client().chat.completions.create(model="gpt-test", messages=MESSAGES, stream=True))
    assert all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks)
    # the gateway always asked upstream for usage, and billed it
    assert upstream.calls("gpt-4o-test")[-1]["body"]["stream_options"] == {"include_usage": True}
    assert gateway.metric("gateway_tokens_total", model="gpt-test", type="cached_input") - tokens_before == 1500


def test_stream_is_relayed_as_it_arrives(gateway: Gateway, upstream: FakeUpstreamThread) -> None:
    import time

    upstream.script("gpt-4o-test", {"output_tokens": 6, "itl_ms": 150})
    started = time.perf_counter()
    stream = gateway.client().chat.completions.create(model="gpt-test", messages=MESSAGES, stream=True)
    first_content_at = None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            first_content_at = first_content_at or time.perf_counter() - started
    total = time.perf_counter() - started
    assert first_content_at is not None and total > 0.7
    assert first_content_at < total - 0.5  # the first word arrived long before the last


def test_reasoning_tokens_are_billed_in_their_own_bucket(gateway: Gateway, upstream: FakeUpstreamThread) -> None:
    usage = {
        "prompt_tokens": 100, "completion_tokens": 1000, "total_tokens": 1100,
        "completion_tokens_details": {"reasoning_tokens": 600},
    }
    upstream.script("o3-test", {"usage": usage})
    reasoning_before = gateway.metric("gateway_tokens_total", model="reasoner-test", type="reasoning")
    output_before = gateway.metric("gateway_tokens_total", model="reasoner-test", type="output")
    raw = gateway.client().chat.completions.with_raw_response.create(model="reasoner-test", messages=MESSAGES)
    # 100 x $1.10/M + 400 x $4.40/M + 600 x $12/M
    assert raw.headers["x-gateway-cost-usd"] == "0.00907"
    details = raw.parse().usage.model_dump()["cost_details"]
    assert details["reasoning"] == 0.0072 and details["output"] == 0.00176 and details["input"] == 0.00011
    assert gateway.metric("gateway_tokens_total", model="reasoner-test", type="reasoning") - reasoning_before == 600
    assert gateway.metric("gateway_tokens_total", model="reasoner-test", type="output") - output_before == 400


def test_long_context_tier_prices_the_whole_request(gateway: Gateway, upstream: FakeUpstreamThread) -> None:
    client = gateway.client()
    upstream.script("tiered-up", {"usage": {"prompt_tokens": 1000, "completion_tokens": 10}})
    short = client.chat.completions.with_raw_response.create(model="tiered-test", messages=MESSAGES)
    upstream.script("tiered-up", {"usage": {"prompt_tokens": 1001, "completion_tokens": 10}})
    long = client.chat.completions.with_raw_response.create(model="tiered-test", messages=MESSAGES)
    assert short.headers["x-gateway-cost-usd"] == "0.00102"  # 1000 x $1/M + 10 x $2/M
    assert long.headers["x-gateway-cost-usd"] == "0.004084"  # 1001 x $4/M + 10 x $8/M


def test_missing_usage_is_counted_by_the_gateway(gateway: Gateway, upstream: FakeUpstreamThread) -> None:
    upstream.script("gpt-4o-test", {"reply": "hello world", "omit_usage": True})
    before = gateway.metric("gateway_usage_estimated_total", model="gpt-test", reason="missing")
    raw = gateway.client().chat.completions.with_raw_response.create(
        model="gpt-test", messages=[{"role": "user", "content": "hi"}]
    )
    usage = raw.parse().usage
    # o200k: 3 (message) + "user" 1 + "hi" 1 + 3 (reply priming) = 8 prompt; "hello world" = 2
    assert (usage.prompt_tokens, usage.completion_tokens) == (8, 2)
    assert raw.headers["x-gateway-cost-usd"] == "0.00004"  # 8 x $2.50/M + 2 x $10/M
    assert gateway.metric("gateway_usage_estimated_total", model="gpt-test", reason="missing") - before == 1

    chunks = list(gateway.client().chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "hi"}], stream=True,
        stream_options={"include_usage": True},
    ))
    assert chunks[-1].usage.model_dump()["cost"] == 0.00004
    assert gateway.metric("gateway_usage_estimated_total", model="gpt-test", reason="missing") - before == 2


def test_tool_calls_pass_through(gateway: Gateway, upstream: FakeUpstreamThread) -> None:
    upstream.script("gpt-4o-test", {"tool_calls": [{"name": "get_weather", "arguments": '{"city": "Paris"}'}]})
    tools: Any = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    completion = gateway.client().chat.completions.create(model="gpt-test", messages=MESSAGES, tools=tools)
    call = completion.choices[0].message.tool_calls[0]
    assert (call.function.name, call.function.arguments) == ("get_weather", '{"city": "Paris"}')
    assert completion.choices[0].finish_reason == "tool_calls"
    assert upstream.calls("gpt-4o-test")[-1]["body"]["tools"] == tools


def test_models_endpoint_lists_availability(gateway: Gateway) -> None:
    models = {m.id: m.model_dump() for m in gateway.client().models.list()}
    assert models["gpt-test"]["available"] is True
    assert models["nokey-test"]["available"] is False
    assert "set OPENAI_API_KEY" in models["nokey-test"]["unavailable_reason"]


def test_health_and_readiness(gateway: Gateway) -> None:
    import httpx

    assert httpx.get(f"{gateway.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{gateway.url}/readyz")
    assert ready.status_code == 200 and ready.json()["models_available"] == 6
    assert "healthz" not in gateway.metrics()
