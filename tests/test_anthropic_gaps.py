"""Chat Completions features that Anthropic's Messages API has no field for (structured output,
reasoning_effort, legacy functions, logprobs, n), through the official openai client against the
real gateway and the fake Anthropic upstream: what was sent upstream, what the client got, and
what it cost."""

from __future__ import annotations

import asyncio
from typing import Any

import openai
import pytest
from conftest import Gateway
from pydantic import BaseModel

from gateway.config.settings import ModelSpec
from gateway.errors import UpstreamError
from gateway.fake_upstream import FakeUpstreamThread
from gateway.money.pricing import Price, Rates
from gateway.providers.anthropic import AnthropicProvider

USAGE = {"input_tokens": 10, "output_tokens": 20, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0}
HELLO: Any = [{"role": "user", "content": "Hello"}]
HELLO_SENT = [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}]
LOOKUP: Any = {"name": "lookup", "description": "Search",
               "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}
LOOKUP_SENT = {"name": "lookup", "description": "Search",
               "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}}}


class Person(BaseModel):
    name: str
    age: int


PERSON_JSON = '{"name": "Ada", "age": 36}'
PERSON_SCHEMA = {  # what the openai client sends for `Person`
    "properties": {"name": {"title": "Name", "type": "string"}, "age": {"title": "Age", "type": "integer"}},
    "required": ["name", "age"], "title": "Person", "type": "object", "additionalProperties": False,
}
PERSON_TOOL = {"name": "Person", "description": "Answer with a JSON object matching this schema.",
               "input_schema": PERSON_SCHEMA}


def _sent(upstream: FakeUpstreamThread) -> dict[str, Any]:
    body: dict[str, Any] = upstream.calls("claude-up")[-1]["body"]
    return body


# ---------------------------------------------------------------- structured output


def test_parse_forces_a_tool_whose_input_is_the_answer(gateway: Gateway, upstream: FakeUpstreamThread) -> None:
    upstream.script("claude-up", {"reply": PERSON_JSON, "usage": USAGE})
    completion = gateway.client().chat.completions.parse(model="claude-test", messages=HELLO, response_format=Person)
    choice = completion.choices[0]
    assert choice.message.parsed == Person(name="Ada", age=36)
    assert choice.message.content == '{"name":"Ada","age":36}'
    assert not choice.message.tool_calls and choice.finish_reason == "stop"
    assert completion.usage is not None and completion.usage.completion_tokens == 20
    assert _sent(upstream) == {  # (`parse` sends stream: false)
        "model": "claude-up", "messages": HELLO_SENT, "max_tokens": 4096, "stream": False,
        "tools": [PERSON_TOOL], "tool_choice": {"type": "tool", "name": "Person"},
    }


def test_parse_streamed_turns_the_tool_input_into_content(gateway: Gateway, upstream: FakeUpstreamThread) -> None:
    upstream.script("claude-up", {"reply": PERSON_JSON, "usage": USAGE})
    pieces = []
    with gateway.client().chat.completions.stream(
        model="claude-test", messages=HELLO, response_format=Person, stream_options={"include_usage": True}
    ) as stream:
        for event in stream:
            if event.type == "content.delta":
                pieces.append(event.delta)
        final = stream.get_final_completion()
    assert [p for p in pieces if p] == ['{"name": "Ada", ', '"age": 36}']  # the tool's input_json_delta pieces
    assert final.choices[0].message.parsed == Person(name="Ada", age=36)
    assert not final.choices[0].message.tool_calls and final.choices[0].finish_reason == "stop"
    assert final.usage is not None and final.usage.model_dump()["cost"] == 0.00033  # 10 x $3/M + 20 x $15/M
    assert _sent(upstream) == {
        "model": "claude-up", "messages": HELLO_SENT, "max_tokens": 4096, "stream": True,
        "tools": [PERSON_TOOL], "tool_choice": {"type": "tool", "name": "Person"},
    }


def test_json_object_is_the_json_output_tool(gateway: Gateway, upstream: FakeUpstreamThread) -> None:
    upstream.script("claude-up", {"reply": '{"ok": true}', "usage": USAGE})
    client = gateway.client()
    completion = client.chat.completions.create(
        model="claude-test", messages=HELLO, response_format={"type": "json_object"}, temperature=0.2
    )
    assert completion.choices[0].message.content == '{"ok":true}'
    assert completion.choices[0].finish_reason == "stop"
    assert _sent(upstream) == {
        "model": "claude-up", "messages": HELLO_SENT, "max_tokens": 4096, "temperature": 0.2,
        "tools": [{"name": "json_output", "description": "Answer with a JSON object.",
                   "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "tool", "name": "json_output"},
    }
    chunks = list(client.chat.completions.create(
        model="claude-test", messages=HELLO, response_format={"type": "json_object"}, stream=True
    ))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == '{"ok": true}'
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert not any(c.choices[0].delta.tool_calls for c in chunks if c.choices)


def test_json_schema_next_to_tools_lets_the_model_call_them(gateway: Gateway, upstream: FakeUpstreamThread) -> None:
    upstream.script("claude-up", {"tool_calls": [{"name": "lookup", "arguments": '{"q": "Ada"}'}], "usage": USAGE})
    client = gateway.client()
    fmt: Any = {"type": "json_schema", "json_schema": {"name": "Person", "schema": PERSON_SCHEMA, "strict": True}}
    completion = client.chat.completions.create(
        model="claude-test", messages=HELLO, tools=[{"type": "function", "function": LOOKUP}], response_format=fmt
    )
    message = completion.choices[0].message
    assert message.content is None and completion.choices[0].finish_reason == "tool_calls"
    assert message.tool_calls is not None and message.tool_calls[0].function.name == "lookup"  # type: ignore[union-attr]
    sent = _sent(upstream)
    assert sent["tools"] == [LOOKUP_SENT, PERSON_TOOL] and sent["tool_choice"] == {"type": "any"}

    # both at once (parallel tool use): the answer is the content, the client's tool a tool call
    upstream.script("claude-up", {"tool_calls": [{"name": "lookup", "arguments": "{}"},
                                                 {"name": "Person", "arguments": PERSON_JSON}]})
    completion = client.chat.completions.create(
        model="claude-test", messages=HELLO, tools=[{"type": "function", "function": LOOKUP}], response_format=fmt
    )
    message = completion.choices[0].message
    assert message.content == '{"name":"Ada","age":36}' and completion.choices[0].finish_reason == "tool_calls"
    assert [c.function.name for c in message.tool_calls or ()] == ["lookup"]  # type: ignore[union-attr]

    # a tool_choice forcing a tool of the client's wins: no structured-output tool
    forcing: Any = (("required", {"type": "any"}),
                    ({"type": "function", "function": {"name": "lookup"}}, {"type": "tool", "name": "lookup"}))
    for choice, mapped in forcing:
        client.chat.completions.create(model="claude-test", messages=HELLO, response_format=fmt,
                                       tools=[{"type": "function", "function": LOOKUP}], tool_choice=choice)
        assert _sent(upstream)["tools"] == [LOOKUP_SENT] and _sent(upstream)["tool_choice"] == mapped

    # tools the client turned off: the structured answer is forced
    upstream.script("claude-up", {"reply": PERSON_JSON})
    completion = client.chat.completions.create(model="claude-test", messages=HELLO, response_format=fmt,
                                                tools=[{"type": "function", "function": LOOKUP}], tool_choice="none")
    assert completion.choices[0].message.content == '{"name":"Ada","age":36}'
    assert _sent(upstream)["tool_choice"] == {"type": "tool", "name": "Person"}


def test_structured_output_named_like_a_tool_is_refused(gateway: Gateway, upstream: FakeUpstreamThread) -> None:
    fmt: Any = {"type": "json_schema", "json_schema": {"name": "lookup", "schema": PERSON_SCHEMA}}
    with pytest.raises(openai.BadRequestError) as err:
        gateway.client().chat.completions.create(
            model="claude-test", messages=HELLO, response_format=fmt, tools=[{"type": "function", "function": LOOKUP}]
        )
    assert err.value.body == {"message": "response_format 'lookup' has the name of one of the tools",
                              "type": "invalid_request_error", "param": "response_format", "code": None}
    assert upstream.calls("claude-up") == []


# ---------------------------------------------------------------- reasoning_effort


@pytest.mark.parametrize(("effort", "budget"), [("minimal", 1024), ("low", 1024), ("medium", 4096), ("high", 16384)])
def test_reasoning_effort_is_extended_thinking(
    gateway: Gateway, upstream: FakeUpstreamThread, effort: Any, budget: int
) -> None:
    upstream.script("claude-up", {"reply": "Paris", "usage": USAGE})
    raw = gateway.client().chat.completions.with_raw_response.create(
        model="claude-test", messages=HELLO, reasoning_effort=effort, max_completion_tokens=100,
        temperature=0.3, top_p=0.5,
    )
    completion = raw.parse()
    message = completion.choices[0].message.model_dump()
    assert message["content"] == "Paris" and completion.choices[0].finish_reason == "stop"
    assert message["reasoning_content"] == f"Thinking within {budget} tokens."
    assert message["thinking_blocks"] == [
        {"type": "thinking", "thinking": f"Thinking within {budget} tokens.", "signature": "fake-signature"}]
    assert raw.headers["x-gateway-cost-usd"] == "0.00033"  # thinking is inside output_tokens, billed as output
    assert _sent(upstream) == {  # no temperature, no top_p under 0.95: Anthropic refuses them with thinking
        "model": "claude-up", "messages": HELLO_SENT, "max_tokens": budget + 100,
        "thinking": {"type": "enabled", "budget_tokens": budget},
    }


def test_reasoning_effort_streamed_and_without_max_tokens(gateway: Gateway, upstream: FakeUpstreamThread) -> None:
    upstream.script("claude-up", {"reply": "Paris is", "usage": USAGE})
    chunks = list(gateway.client().chat.completions.create(
        model="claude-test", messages=HELLO, reasoning_effort="medium", top_p=0.97, stream=True,
    ))
    deltas = [c.choices[0].delta.model_dump() for c in chunks if c.choices]
    assert "".join(d.get("reasoning_content") or "" for d in deltas) == "Thinking within 4096 tokens."
    assert "".join(d["content"] or "" for d in deltas) == "Paris is"
    assert [d["thinking_blocks"] for d in deltas if d.get("thinking_blocks")] == [
        [{"type": "thinking", "thinking": "Thinking within 4096 tokens.", "signature": "fake-signature"}]]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    sent = _sent(upstream)
    assert sent["max_tokens"] == 4096 + 4096 and sent["top_p"] == 0.97
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 4096}


def test_thinking_blocks_go_back_with_the_turn(gateway: Gateway, upstream: FakeUpstreamThread) -> None:
    block = {"type": "thinking", "thinking": "Look it up.", "signature": "sig"}
    messages: Any = [
        *HELLO,
        {"role": "assistant", "content": None, "thinking_blocks": [block, {"type": "redacted_thinking", "data": "x"}],
         "tool_calls": [{"id": "t1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "t1", "content": "found"},
    ]
    gateway.client().chat.completions.create(model="claude-test", messages=messages, reasoning_effort="low",
                                             tools=[{"type": "function", "function": LOOKUP}])
    sent = _sent(upstream)
    assert sent["messages"][1] == {"role": "assistant", "content": [
        block, {"type": "redacted_thinking", "data": "x"}, {"type": "tool_use", "id": "t1", "name": "lookup",
                                                             "input": {}}]}
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 1024} and "tool_choice" not in sent


def test_a_forced_tool_turns_thinking_off(gateway: Gateway, upstream: FakeUpstreamThread) -> None:
    upstream.script("claude-up", {"reply": PERSON_JSON})
    client = gateway.client()
    completion = client.chat.completions.parse(
        model="claude-test", messages=HELLO, response_format=Person, reasoning_effort="high", temperature=0.5
    )
    assert completion.choices[0].message.parsed == Person(name="Ada", age=36)
    sent = _sent(upstream)
    assert "thinking" not in sent and sent["temperature"] == 0.5 and sent["max_tokens"] == 4096
    client.chat.completions.create(model="claude-test", messages=HELLO, reasoning_effort="high",
                                   tools=[{"type": "function", "function": LOOKUP}], tool_choice="required")
    assert "thinking" not in _sent(upstream) and _sent(upstream)["tool_choice"] == {"type": "any"}


def test_unknown_reasoning_effort_is_refused(gateway: Gateway, upstream: FakeUpstreamThread) -> None:
    client = gateway.client()
    client.chat.completions.create(model="claude-test", messages=HELLO, reasoning_effort="none")
    assert "thinking" not in _sent(upstream)
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="claude-test", messages=HELLO, extra_body={"reasoning_effort": "max"})
    assert err.value.body == {"message": "'reasoning_effort' must be one of none, minimal, low, medium, high",
                              "type": "invalid_request_error", "param": "reasoning_effort", "code": None}


# ---------------------------------------------------------------- legacy functions


def test_legacy_functions_answer_with_function_call(gateway: Gateway, upstream: FakeUpstreamThread) -> None:
    upstream.script("claude-up", {"tool_calls": [{"name": "lookup", "arguments": '{"q": "Ada"}'}], "usage": USAGE})
    client = gateway.client()
    completion = client.chat.completions.create(
        model="claude-test", messages=HELLO, functions=[LOOKUP], function_call={"name": "lookup"}
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "function_call" and choice.message.tool_calls is None
    assert choice.message.function_call is not None
    assert choice.message.function_call.model_dump() == {"name": "lookup", "arguments": '{"q":"Ada"}'}
    assert choice.message.content is None
    assert _sent(upstream) == {
        "model": "claude-up", "messages": HELLO_SENT, "max_tokens": 4096, "tools": [LOOKUP_SENT],
        "tool_choice": {"type": "tool", "name": "lookup", "disable_parallel_tool_use": True},
    }
    legacy_choices: Any = (("auto", {"type": "auto", "disable_parallel_tool_use": True}), ("none", {"type": "none"}))
    for call, mapped in legacy_choices:
        client.chat.completions.create(model="claude-test", messages=HELLO, functions=[LOOKUP], function_call=call)
        assert _sent(upstream)["tool_choice"] == mapped

    chunks = list(client.chat.completions.create(model="claude-test", messages=HELLO, functions=[LOOKUP], stream=True))
    calls = [c.choices[0].delta.function_call for c in chunks if c.choices and c.choices[0].delta.function_call]
    assert calls[0].name == "lookup" and "".join(c.arguments or "" for c in calls) == '{"q": "Ada"}'
    assert not any(c.choices[0].delta.tool_calls for c in chunks if c.choices)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "function_call"


def test_legacy_turns_become_tool_use_and_results(gateway: Gateway, upstream: FakeUpstreamThread) -> None:
    messages: Any = [
        *HELLO,
        {"role": "assistant", "content": None, "function_call": {"name": "lookup", "arguments": '{"q": "Ada"}'}},
        {"role": "function", "name": "lookup", "content": "a mathematician"},
    ]
    completion = gateway.client().chat.completions.create(model="claude-test", messages=messages, functions=[LOOKUP])
    assert completion.choices[0].finish_reason == "stop" and completion.choices[0].message.function_call is None
    assert _sent(upstream)["messages"] == [
        *HELLO_SENT,
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "call_legacy_1", "name": "lookup", "input": {"q": "Ada"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_legacy_1",
                                      "content": [{"type": "text", "text": "a mathematician"}]}]},
    ]


def test_tools_and_functions_together_are_refused(gateway: Gateway) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        gateway.client().chat.completions.create(
            model="claude-test", messages=HELLO, functions=[LOOKUP], tools=[{"type": "function", "function": LOOKUP}]
        )
    assert err.value.body["param"] == "functions"  # type: ignore[index]


# ---------------------------------------------------------------- logprobs


def test_logprobs_are_refused_never_dropped(gateway: Gateway, upstream: FakeUpstreamThread) -> None:
    client = gateway.client()
    for kwargs, param in (({"logprobs": True}, "logprobs"), ({"logprobs": True, "top_logprobs": 2}, "logprobs"),
                          ({"top_logprobs": 2}, "top_logprobs")):
        with pytest.raises(openai.BadRequestError) as err:
            client.chat.completions.create(model="claude-test", messages=HELLO, **kwargs)
        assert err.value.body == {"message": "model 'claude-test' (Anthropic) cannot return logprobs",
                                  "type": "invalid_request_error", "param": param, "code": None}
    assert upstream.calls("claude-up") == []
    completion = client.chat.completions.create(model="claude-test", messages=HELLO, logprobs=False)
    assert completion.choices[0].logprobs is None and "logprobs" not in _sent(upstream)


# ---------------------------------------------------------------- n


N_USAGE = {
    "input_tokens": 100, "output_tokens": 200, "cache_read_input_tokens": 2000, "cache_creation_input_tokens": 1500,
    "cache_creation": {"ephemeral_5m_input_tokens": 1000, "ephemeral_1h_input_tokens": 500},
}
# twice (100 x $3/M + 2,000 x $0.30/M + 1,000 x $3.75/M + 500 x $6/M + 200 x $15/M)
N2_COST = 0.0213


def test_n_is_n_concurrent_calls_with_their_usage_summed(gateway: Gateway, upstream: FakeUpstreamThread) -> None:
    upstream.script("claude-up", {"reply": "Bonjour", "usage": N_USAGE})
    raw = gateway.client().chat.completions.with_raw_response.create(
        model="claude-test", messages=HELLO, n=2, max_tokens=50
    )
    completion = raw.parse()
    assert [(c.index, c.message.content, c.finish_reason) for c in completion.choices] == [
        (0, "Bonjour", "stop"), (1, "Bonjour", "stop")]
    usage = completion.usage.model_dump()  # type: ignore[union-attr]
    assert usage["prompt_tokens"] == 7200 and usage["completion_tokens"] == 400 and usage["total_tokens"] == 7600
    details = usage["prompt_tokens_details"]
    assert (details["cached_tokens"], details["cache_write_tokens"], details["cache_write_1h_tokens"]) == (
        4000, 3000, 1000)
    assert usage["cost"] == N2_COST
    assert usage["cost_details"] == {
        "input": 0.0006, "cached_input": 0.0012, "cache_write": 0.0135, "output": 0.006, "reasoning": 0.0}
    assert raw.headers["x-gateway-cost-usd"] == "0.0213"
    calls = upstream.calls("claude-up")
    assert len(calls) == 2 and calls[0]["body"] == calls[1]["body"] == {
        "model": "claude-up", "messages": HELLO_SENT, "max_tokens": 50}


def test_n_with_structured_output(gateway: Gateway, upstream: FakeUpstreamThread) -> None:
    upstream.script("claude-up", {"reply": PERSON_JSON, "usage": USAGE})
    completion = gateway.client().chat.completions.parse(
        model="claude-test", messages=HELLO, response_format=Person, n=3
    )
    assert [c.message.parsed for c in completion.choices] == [Person(name="Ada", age=36)] * 3
    assert completion.usage is not None and completion.usage.model_dump()["cost"] == 0.00099


def test_n_with_stream_is_refused(gateway: Gateway, upstream: FakeUpstreamThread) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        gateway.client().chat.completions.create(model="claude-test", messages=HELLO, n=2, stream=True)
    assert err.value.body == {"message": "n > 1 is not supported with stream for Anthropic models",
                              "type": "invalid_request_error", "param": "n", "code": None}
    assert upstream.calls("claude-up") == []


def test_one_failed_call_of_n_fails_the_request(gateway: Gateway, upstream: FakeUpstreamThread) -> None:
    upstream.script("claude-up", {"fault": "429", "fault_times": 1, "error_message": "slow down"})
    with pytest.raises(openai.RateLimitError) as err:
        gateway.client().chat.completions.create(model="claude-test", messages=HELLO, n=2)
    assert "slow down" in err.value.message
    assert len(upstream.calls("claude-up")) in (1, 2)  # no retry; the other call may be cancelled before it is sent


class _Transport:
    """One call fails at once; the others wait until cancelled (and say so)."""

    def __init__(self) -> None:
        self.calls = 0
        self.cancelled = 0

    def endpoint(self, model: ModelSpec, path: str, headers: dict[str, str]) -> str:
        return path

    async def post_json(self, model: ModelSpec, endpoint: str, body: dict[str, Any], deadline: float | None) -> Any:
        self.calls += 1
        if self.calls == 2:
            raise UpstreamError("the second call failed")
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise


@pytest.mark.anyio
async def test_the_first_failure_of_n_cancels_the_other_calls() -> None:
    transport = _Transport()
    provider = AnthropicProvider(transport)  # type: ignore[arg-type]
    price = Price(Rates(1, 1, 1, 1, 1, 1))
    spec = ModelSpec("claude-test", "anthropic", "anthropic", "claude-up", "http://x", "k", price, 60)
    with pytest.raises(UpstreamError, match="the second call failed"):
        await asyncio.wait_for(provider.complete(spec, {"messages": HELLO, "n": 3}), 5)
    assert transport.calls == 3 and transport.cancelled == 2
