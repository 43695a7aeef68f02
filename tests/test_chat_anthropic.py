"""Anthropic Messages upstreams through the official openai client: translation and exact cost."""

from __future__ import annotations

from typing import Any

from conftest import ANTHROPIC_KEY, Gateway

from gateway.fake_upstream import FakeUpstreamThread

CACHE_USAGE = {
    "input_tokens": 100,
    "output_tokens": 200,
    "cache_read_input_tokens": 2000,
    "cache_creation_input_tokens": 1500,
    "cache_creation": {"ephemeral_5m_input_tokens": 1000, "ephemeral_1h_input_tokens": 500},
}
# 100 x $3/M + 2,000 x $0.30/M + 1,000 x $3.75/M + 500 x $6/M + 200 x $15/M
CACHE_COST = 0.01065


def test_cache_read_and_both_cache_writes_are_priced_exactly(gateway: Gateway, upstream: FakeUpstreamThread) -> None:
    upstream.script("claude-up", {"reply": "Bonjour", "usage": CACHE_USAGE})
    write_before = gateway.metric("gateway_tokens_total", model="claude-test", type="cache_write")
    spend_before = gateway.metric("gateway_spend_usd_total", model="claude-test", provider="anthropic")
    raw = gateway.client().chat.completions.with_raw_response.create(
        model="claude-test",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}],
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == "Bonjour"
    assert completion.choices[0].finish_reason == "stop"
    usage = completion.usage.model_dump()
    # clients always get the OpenAI convention
    assert usage["prompt_tokens"] == 3600 and usage["completion_tokens"] == 200 and usage["total_tokens"] == 3800
    assert usage["prompt_tokens_details"]["cached_tokens"] == 2000
    assert usage["cost"] == CACHE_COST
    assert usage["cost_details"] == {
        "input": 0.0003, "cached_input": 0.0006, "cache_write": 0.00675, "output": 0.003, "reasoning": 0.0,
    }
    assert raw.headers["x-gateway-cost-usd"] == "0.01065"
    assert gateway.metric("gateway_tokens_total", model="claude-test", type="cache_write") - write_before == 1500
    spent = gateway.metric("gateway_spend_usd_total", model="claude-test", provider="anthropic") - spend_before
    assert round(spent, 12) == CACHE_COST

    call = upstream.calls("claude-up")[-1]
    assert call["path"] == "/v1/messages"
    assert call["headers"]["x-api-key"] == ANTHROPIC_KEY
    assert call["body"]["system"] == [{"type": "text", "text": "Be brief."}]
    assert call["body"]["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}]
    assert call["body"]["max_tokens"] == 4096


def test_stream_costs_the_same_and_splits_usage_across_events(
    gateway: Gateway, upstream: FakeUpstreamThread
) -> None:
    upstream.script("claude-up", {"reply": "un deux trois", "usage": CACHE_USAGE})
    chunks = list(gateway.client().chat.completions.create(
        model="claude-test", messages=[{"role": "user", "content": "Count"}], max_tokens=50,
        stream=True, stream_options={"include_usage": True},
    ))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "un deux trois"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    usage = chunks[-1].usage.model_dump()
    assert usage["cost"] == CACHE_COST
    assert usage["completion_tokens"] == 200  # from message_delta, not message_start's placeholder
    assert upstream.calls("claude-up")[-1]["body"]["max_tokens"] == 50


def test_tools_are_translated_both_ways(gateway: Gateway, upstream: FakeUpstreamThread) -> None:
    upstream.script("claude-up", {"tool_calls": [{"name": "lookup", "arguments": '{"q": "llama"}'}]})
    tools: Any = [{"type": "function", "function": {
        "name": "lookup", "description": "Search",
        "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
    }}]
    client = gateway.client()
    completion = client.chat.completions.create(
        model="claude-test", messages=[{"role": "user", "content": "find"}], tools=tools, tool_choice="required"
    )
    call = completion.choices[0].message.tool_calls[0]
    assert call.function.name == "lookup" and call.function.arguments == '{"q":"llama"}'
    assert completion.choices[0].finish_reason == "tool_calls"
    sent = upstream.calls("claude-up")[-1]["body"]
    assert sent["tools"] == [{"name": "lookup", "description": "Search",
                              "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}}}]
    assert sent["tool_choice"] == {"type": "any"}

    chunks = list(client.chat.completions.create(
        model="claude-test", messages=[{"role": "user", "content": "find"}], tools=tools, stream=True
    ))
    args = "".join(
        c.choices[0].delta.tool_calls[0].function.arguments or ""
        for c in chunks if c.choices and c.choices[0].delta.tool_calls
    )
    assert args == '{"q": "llama"}'


def test_tool_results_and_images_translate_to_anthropic_blocks(
    gateway: Gateway, upstream: FakeUpstreamThread
) -> None:
    messages: Any = [
        {"role": "user", "content": [
            {"type": "text", "text": "what is this"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        ]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "t1", "type": "function", "function": {"name": "see", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "t1", "content": "a cat"},
    ]
    gateway.client().chat.completions.create(model="claude-test", messages=messages, stop="END", temperature=0)
    sent = upstream.calls("claude-up")[-1]["body"]
    assert sent["messages"][0]["content"][1] == {
        "type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}
    assert sent["messages"][1] == {"role": "assistant", "content": [
        {"type": "tool_use", "id": "t1", "name": "see", "input": {}}]}
    assert sent["messages"][2] == {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "a cat"}]}]}
    assert sent["stop_sequences"] == ["END"] and sent["temperature"] == 0
