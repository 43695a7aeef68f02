"""The Anthropic Messages format: requests to chat, completions and streams back, errors."""

from __future__ import annotations

import copy
from typing import Any

import httpx
import orjson
import pytest

from gateway.errors import (
    AuthenticationFailed,
    BudgetExceeded,
    GatewayError,
    InvalidRequest,
    RateLimited,
    ServiceUnavailable,
    UpstreamError,
    UpstreamTimeout,
)
from gateway.formats.messages import (
    MessagesStream,
    anthropic_error_type,
    anthropic_usage,
    chat_to_message,
    error_body,
    messages_to_chat,
)

CACHE = {"type": "ephemeral"}
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
PNG = "iVBORw0KGgo="


def _body(**extra: Any) -> dict[str, Any]:
    return {"model": "claude-sonnet-4", "max_tokens": 100, "messages": [{"role": "user", "content": "Hi"}], **extra}


# --- requests -----------------------------------------------------------------------------------


def test_a_full_request_becomes_the_chat_body() -> None:
    body = {
        "model": "claude-sonnet-4",
        "max_tokens": 1024,
        "system": [{"type": "text", "text": "You are terse."},
                   {"type": "text", "text": "Long policy.", "cache_control": CACHE}],
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "Weather here?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/sky.jpg"}},
            ]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "The user wants weather.", "signature": "sig"},
                {"type": "redacted_thinking", "data": "opaque"},
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"city": "Lyon"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "is_error": True,
                 "content": [{"type": "text", "text": "station"}, {"type": "text", "text": "offline"}]},
                {"type": "text", "text": "And tomorrow?", "cache_control": CACHE},
            ]},
        ],
        "tools": [{"name": "get_weather", "description": "Weather by city.", "input_schema": SCHEMA},
                  {"type": "custom", "name": "noop", "input_schema": {"type": "object"}, "strict": True}],
        "tool_choice": {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
        "thinking": {"type": "enabled", "budget_tokens": 8000},
        "stop_sequences": ["END"],
        "temperature": 0.2,
        "top_p": 0.9,
        "top_k": 40,
        "metadata": {"user_id": "user-7"},
        "stream": True,
    }
    sent = copy.deepcopy(body)
    assert messages_to_chat(body) == {
        "model": "claude-sonnet-4",
        "max_tokens": 1024,
        "messages": [
            {"role": "system", "content": [{"type": "text", "text": "You are terse."},
                                           {"type": "text", "text": "Long policy.", "cache_control": CACHE}]},
            {"role": "user", "content": [
                {"type": "text", "text": "Weather here?"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/sky.jpg"}},
            ]},
            {"role": "assistant", "content": "Checking.", "tool_calls": [
                {"id": "toolu_1", "type": "function",
                 "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
                {"id": "toolu_2", "type": "function",
                 "function": {"name": "get_weather", "arguments": '{"city":"Lyon"}'}},
            ]},
            {"role": "tool", "tool_call_id": "toolu_1", "content": "18C"},
            {"role": "tool", "tool_call_id": "toolu_2", "content": "station\noffline"},
            {"role": "user", "content": [{"type": "text", "text": "And tomorrow?", "cache_control": CACHE}]},
        ],
        "tools": [
            {"type": "function", "function": {"name": "get_weather", "description": "Weather by city.",
                                              "parameters": SCHEMA}},
            {"type": "function", "function": {"name": "noop", "parameters": {"type": "object"}, "strict": True}},
        ],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "parallel_tool_calls": False,
        "reasoning_effort": "medium",
        "stop": ["END"],
        "temperature": 0.2,
        "top_p": 0.9,
        "user": "user-7",
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    assert body == sent  # the client's body is left as it was


def test_a_minimal_request_and_plain_system_prompts() -> None:
    assert messages_to_chat(_body()) == {
        "model": "claude-sonnet-4", "max_tokens": 100, "messages": [{"role": "user", "content": "Hi"}],
    }
    system = messages_to_chat(_body(system="Be brief.", stream=False))
    assert system["messages"][0] == {"role": "system", "content": "Be brief."}
    assert system["stream"] is False and "stream_options" not in system
    blocks = messages_to_chat(_body(system=[{"type": "text", "text": "A"}, {"type": "text", "text": "B"}]))
    assert blocks["messages"][0] == {"role": "system", "content": "A\nB"}
    assert messages_to_chat(_body(system=""))["messages"] == [{"role": "user", "content": "Hi"}]


def test_text_blocks_collapse_to_a_string_only_when_nothing_is_lost() -> None:
    one = [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]
    assert messages_to_chat(_body(messages=one))["messages"] == [{"role": "user", "content": "Hi"}]
    two = [{"role": "user", "content": [{"type": "text", "text": "A"}, {"type": "text", "text": "B"}]}]
    assert messages_to_chat(_body(messages=two))["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "A"}, {"type": "text", "text": "B"}]}]


def test_tool_results_come_before_the_rest_of_the_message_and_keep_their_breakpoint() -> None:
    messages = [
        {"role": "user", "content": "Look at the chart."},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "read", "input": {}}]},
        {"role": "user", "content": [
            {"type": "text", "text": "Here it is."},
            {"type": "tool_result", "tool_use_id": "t1", "cache_control": CACHE, "content": [
                {"type": "text", "text": "chart.png"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
            ]},
        ]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t2", "name": "read", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t2"}]},
    ]
    assert messages_to_chat(_body(messages=messages))["messages"] == [
        {"role": "user", "content": "Look at the chart."},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "t1", "type": "function", "function": {"name": "read", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "t1",
         "content": [{"type": "text", "text": "chart.png", "cache_control": CACHE}]},
        # chat tool messages hold text only: the image goes to the user message right after
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                                     {"type": "text", "text": "Here it is."}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "t2", "type": "function", "function": {"name": "read", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "t2", "content": ""},
    ]


def test_an_assistant_turn_of_thinking_only_and_the_top_level_cache_breakpoint() -> None:
    messages = [
        {"role": "user", "content": "Q"},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "hm", "signature": "s"}]},
        {"role": "user", "content": "More"},
    ]
    assert messages_to_chat(_body(messages=messages, cache_control=CACHE))["messages"] == [
        {"role": "user", "content": "Q"},
        {"role": "assistant", "content": ""},
        {"role": "user", "content": [{"type": "text", "text": "More", "cache_control": CACHE}]},
    ]
    last = [{"role": "user", "content": [{"type": "text", "text": "A"}, {"type": "text", "text": "B"}]}]
    assert messages_to_chat(_body(messages=last, cache_control=CACHE))["messages"][-1]["content"] == [
        {"type": "text", "text": "A"}, {"type": "text", "text": "B", "cache_control": CACHE}]


@pytest.mark.parametrize(("choice", "expected"), [
    ({"type": "auto"}, {"tool_choice": "auto"}),
    ({"type": "any"}, {"tool_choice": "required"}),
    ({"type": "none"}, {"tool_choice": "none"}),
    ({"type": "tool", "name": "f"}, {"tool_choice": {"type": "function", "function": {"name": "f"}}}),
    ({"type": "auto", "disable_parallel_tool_use": True}, {"tool_choice": "auto", "parallel_tool_calls": False}),
    ({"type": "any", "disable_parallel_tool_use": False}, {"tool_choice": "required"}),
])
def test_tool_choice(choice: dict[str, Any], expected: dict[str, Any]) -> None:
    tools = [{"name": "f", "input_schema": {"type": "object"}}]
    chat = messages_to_chat(_body(tools=tools, tool_choice=choice))
    assert {k: chat[k] for k in ("tool_choice", "parallel_tool_calls") if k in chat} == expected


def test_a_tool_choice_without_tools_is_dropped() -> None:
    chat = messages_to_chat(_body(tool_choice={"type": "auto", "disable_parallel_tool_use": True}, tools=[]))
    assert "tool_choice" not in chat and "parallel_tool_calls" not in chat and "tools" not in chat


@pytest.mark.parametrize(("thinking", "effort"), [
    ({"type": "enabled", "budget_tokens": 1024}, "low"),
    ({"type": "enabled", "budget_tokens": 4095}, "low"),
    ({"type": "enabled", "budget_tokens": 4096}, "medium"),
    ({"type": "enabled", "budget_tokens": 16383}, "medium"),
    ({"type": "enabled", "budget_tokens": 16384}, "high"),
    ({"type": "disabled"}, None),
    ({"type": "adaptive"}, None),
])
def test_thinking_budget_becomes_a_reasoning_effort(thinking: dict[str, Any], effort: str | None) -> None:
    assert messages_to_chat(_body(thinking=thinking, max_tokens=32000)).get("reasoning_effort") == effort


def _user(*blocks: Any) -> list[dict[str, Any]]:
    return [{"role": "user", "content": list(blocks)}]


@pytest.mark.parametrize(("body", "message", "param"), [
    ([], "the request body must be a JSON object", None),
    ({"max_tokens": 1, "messages": [{"role": "user", "content": "x"}]},
     "'model' is required and must be a string", "model"),
    (_body(model=3), "'model' is required and must be a string", "model"),
    ({"model": "m", "messages": [{"role": "user", "content": "x"}]},
     "'max_tokens' is required and must be a positive integer", "max_tokens"),
    (_body(max_tokens=0), "'max_tokens' is required and must be a positive integer", "max_tokens"),
    (_body(max_tokens="100"), "'max_tokens' is required and must be a positive integer", "max_tokens"),
    (_body(max_tokens=True), "'max_tokens' is required and must be a positive integer", "max_tokens"),
    ({"model": "m", "max_tokens": 1}, "'messages' must be a non-empty array", "messages"),
    (_body(messages=[]), "'messages' must be a non-empty array", "messages"),
    (_body(messages={"role": "user"}), "'messages' must be a non-empty array", "messages"),
    (_body(messages=["hi"]), "'messages[0]' must be an object", "messages[0]"),
    (_body(messages=[{"role": "tool", "content": "x"}]),
     "'messages[0].role' must be 'user', 'assistant' or 'system', not 'tool'", "messages[0].role"),
    (_body(messages=[{"role": "user", "content": 5}]),
     "'messages[0].content' must be a string or an array of content blocks", "messages[0].content"),
    (_body(messages=_user({"type": "audio"})),
     "content block type 'audio' is not supported in user messages", "messages[0].content[0].type"),
    (_body(messages=_user({"text": "no type"})),
     "'messages[0].content[0]' must be a content block object with a string 'type'", "messages[0].content[0]"),
    (_body(messages=_user({"type": "document", "source": {"type": "text", "data": "x"}})),
     "document blocks are only supported on Anthropic models", "messages[0].content[0]"),
    (_body(messages=_user({"type": "text", "text": 1})), "'messages[0].content[0].text' must be a string",
     "messages[0].content[0].text"),
    (_body(messages=_user({"type": "tool_use", "id": "t", "name": "f", "input": {}})),
     "content block type 'tool_use' is not supported in user messages", "messages[0].content[0].type"),
    (_body(messages=[{"role": "assistant", "content": [{"type": "tool_result", "tool_use_id": "t"}]}]),
     "content block type 'tool_result' is not supported in assistant messages", "messages[0].content[0].type"),
    (_body(messages=[{"role": "assistant", "content": [{"type": "tool_use", "name": "f"}]}]),
     "'messages[0].content[0].id' must be a string", "messages[0].content[0].id"),
    (_body(messages=_user({"type": "tool_result", "content": "x"})),
     "'messages[0].content[0].tool_use_id' must be a string", "messages[0].content[0].tool_use_id"),
    (_body(messages=_user({"type": "tool_result", "tool_use_id": "t", "content": [{"type": "search_result"}]})),
     "content block type 'search_result' is not supported in tool_result messages",
     "messages[0].content[0].content[0].type"),
    (_body(messages=_user({"type": "tool_result", "tool_use_id": "t", "content": 3})),
     "'messages[0].content[0].content' must be a string or an array of blocks", "messages[0].content[0].content"),
    (_body(messages=_user({"type": "image", "source": {"type": "file", "file_id": "f"}})),
     "image source type 'file' is not supported (use 'base64' or 'url')", "messages[0].content[0].source.type"),
    (_body(messages=_user({"type": "image", "source": {"type": "base64", "data": PNG}})),
     "'messages[0].content[0].source.media_type' must be a string", "messages[0].content[0].source.media_type"),
    (_body(system=[{"type": "image"}]), "'system[0]' must be a text block", "system[0].type"),
    (_body(system=7), "'system' must be a string or an array of text blocks", "system"),
    (_body(tools=[{"type": "web_search_20250305", "name": "web_search"}]),
     "server tool 'web_search' (web_search_20250305) is not supported by the gateway; only custom tools are",
     "tools[0]"),
    (_body(tools=[{"type": "bash_20250124", "name": "bash"}]),
     "server tool 'bash' (bash_20250124) is not supported by the gateway; only custom tools are", "tools[0]"),
    (_body(tools=[{"name": "f"}]), "'tools[0].input_schema' must be an object", "tools[0].input_schema"),
    (_body(tools=[{"name": "", "input_schema": {}}]), "'tools[0].name' must be a non-empty string",
     "tools[0].name"),
    (_body(tools={"name": "f"}), "'tools' must be an array", "tools"),
    (_body(tool_choice={"type": "sometimes"}), "'tool_choice.type' must be one of 'auto', 'any', 'tool', 'none'",
     "tool_choice.type"),
    (_body(tool_choice={"type": "tool"}), "'tool_choice.name' must be a string", "tool_choice.name"),
    (_body(thinking={"type": "enabled"}), "'thinking.budget_tokens' must be an integer", "thinking.budget_tokens"),
    (_body(thinking="on"), "'thinking' must be an object", "thinking"),
    (_body(stop_sequences="END"), "'stop_sequences' must be an array of strings", "stop_sequences"),
    (_body(stream="yes"), "'stream' must be a boolean", "stream"),
    (_body(metadata="u"), "'metadata' must be an object", "metadata"),
    (_body(cache_control="on"), "'cache_control' must be an object", "cache_control"),
])
def test_invalid_requests_say_what_and_where(body: Any, message: str, param: str | None) -> None:
    with pytest.raises(InvalidRequest) as caught:
        messages_to_chat(body)
    assert (caught.value.message, caught.value.param, caught.value.status_code) == (message, param, 400)


# --- responses ----------------------------------------------------------------------------------


def _completion(message: dict[str, Any], finish: str | None = "stop", **extra: Any) -> dict[str, Any]:
    return {"id": "chatcmpl-abc123", "object": "chat.completion", "created": 1, "model": "gpt-4.1-mini",
            "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}], **extra}


OPENAI_USAGE = {
    "prompt_tokens": 3600,
    "completion_tokens": 200,
    "total_tokens": 3800,
    "prompt_tokens_details": {"cached_tokens": 2000, "cache_write_tokens": 1500, "cache_write_1h_tokens": 500},
    "completion_tokens_details": {"reasoning_tokens": 0},
    "cost": 0.01065,
    "cost_details": {"input": 0.0003, "cached_input": 0.0006, "cache_write": 0.00675, "output": 0.003,
                     "reasoning": 0.0},
}
ANTHROPIC_USAGE = {
    "input_tokens": 100,
    "cache_creation_input_tokens": 1500,
    "cache_read_input_tokens": 2000,
    "cache_creation": {"ephemeral_5m_input_tokens": 1000, "ephemeral_1h_input_tokens": 500},
    "output_tokens": 200,
    "cost": 0.01065,
    "cost_details": {"input": 0.0003, "cached_input": 0.0006, "cache_write": 0.00675, "output": 0.003,
                     "reasoning": 0.0},
}
ZERO_USAGE = {"input_tokens": 0, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
              "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0}, "output_tokens": 0}


def test_a_text_answer_becomes_a_message() -> None:
    completion = _completion({"role": "assistant", "content": "Bonjour"}, usage=OPENAI_USAGE)
    assert chat_to_message(completion, "claude-test") == {
        "id": "msg_abc123",
        "type": "message",
        "role": "assistant",
        "model": "claude-test",
        "content": [{"type": "text", "text": "Bonjour"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": ANTHROPIC_USAGE,
    }


def test_tool_calls_become_tool_use_blocks() -> None:
    calls = [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
        {"id": "call_2", "type": "function", "function": {"name": "broken", "arguments": '{"city": '}},
        {"type": "function", "function": {"name": "listy", "arguments": "[1, 2]"}},
    ]
    message = chat_to_message(_completion({"role": "assistant", "content": "Let me check.", "tool_calls": calls},
                                          "tool_calls"), "m")
    assert message["content"] == [
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "call_2", "name": "broken", "input": {}},
        {"type": "tool_use", "id": "toolu_abc123_2", "name": "listy", "input": {}},
    ]
    assert message["stop_reason"] == "tool_use"
    assert message["usage"] == ZERO_USAGE
    only_calls = chat_to_message(_completion({"role": "assistant", "content": None, "tool_calls": calls[:1]},
                                             "stop"), "m")
    assert [b["type"] for b in only_calls["content"]] == ["tool_use"]
    assert only_calls["stop_reason"] == "tool_use"  # a tool was called, whatever the provider said


@pytest.mark.parametrize(("finish", "stop_reason"), [
    ("stop", "end_turn"), ("length", "max_tokens"), ("tool_calls", "tool_use"), ("content_filter", "refusal"),
    (None, "end_turn"), ("something_new", "end_turn"),
])
def test_finish_reasons(finish: str | None, stop_reason: str) -> None:
    message = chat_to_message(_completion({"role": "assistant", "content": "x"}, finish), "m")
    assert message["stop_reason"] == stop_reason


def test_empty_answers_ids_and_refusals() -> None:
    empty = chat_to_message(_completion({"role": "assistant", "content": ""}, id="msg_keep"), "m")
    assert (empty["id"], empty["content"]) == ("msg_keep", [])
    assert chat_to_message(_completion({"role": "assistant", "content": "x"}, id="resp-9"), "m")["id"] == "msg_resp-9"
    refused = chat_to_message(_completion({"role": "assistant", "content": None, "refusal": "No."},
                                          "content_filter"), "m")
    assert (refused["content"], refused["stop_reason"]) == ([{"type": "text", "text": "No."}], "refusal")
    assert chat_to_message({"choices": []}, "m")["id"].startswith("msg_")


def test_usage_moves_cache_tokens_outside_input_tokens() -> None:
    assert anthropic_usage(OPENAI_USAGE) == ANTHROPIC_USAGE
    assert anthropic_usage({}) == ZERO_USAGE
    no_split = {"prompt_tokens": 50, "completion_tokens": 5, "prompt_tokens_details": {"cache_write_tokens": 30}}
    assert anthropic_usage(no_split) == {
        "input_tokens": 20, "cache_creation_input_tokens": 30, "cache_read_input_tokens": 0,
        "cache_creation": {"ephemeral_5m_input_tokens": 30, "ephemeral_1h_input_tokens": 0}, "output_tokens": 5}
    # counts that do not add up are clamped, never negative
    too_many = {"prompt_tokens": 10, "completion_tokens": 1, "prompt_tokens_details": {"cached_tokens": 8,
                                                                                      "cache_write_tokens": 9}}
    assert anthropic_usage(too_many)["input_tokens"] == 0
    assert anthropic_usage(too_many)["cache_creation_input_tokens"] == 2


# --- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "kind"), [
    (400, "invalid_request_error"), (401, "authentication_error"), (402, "billing_error"),
    (403, "permission_error"), (404, "not_found_error"), (413, "request_too_large"), (429, "rate_limit_error"),
    (499, "invalid_request_error"), (500, "api_error"), (502, "api_error"), (503, "overloaded_error"),
    (504, "timeout_error"), (529, "overloaded_error"),
])
def test_error_types(status: int, kind: str) -> None:
    assert anthropic_error_type(status) == kind


def test_error_bodies() -> None:
    assert orjson.loads(error_body(InvalidRequest("bad", param="model"))) == {
        "type": "error", "error": {"type": "invalid_request_error", "message": "bad"}}
    assert orjson.loads(error_body(BudgetExceeded("over budget"))) == {
        "type": "error", "error": {"type": "rate_limit_error", "message": "over budget"}}
    assert orjson.loads(error_body(UpstreamError("upstream down")))["error"]["type"] == "api_error"


# --- streams ------------------------------------------------------------------------------------


def _chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"id": "chatcmpl-abc123", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4.1-mini",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}


def _sse(*chunks: dict[str, Any]) -> bytes:
    return b"".join(b"data: " + orjson.dumps(chunk) + b"\n\n" for chunk in chunks)


def _call(index: int, arguments: str, call_id: str | None = None, name: str | None = None) -> dict[str, Any]:
    call: dict[str, Any] = {"index": index, "function": {"arguments": arguments}}
    if call_id is not None:
        call.update(id=call_id, type="function")
        call["function"]["name"] = name
    return {"tool_calls": [call]}


def _events(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for frame in raw.split(b"\n\n")[:-1]:
        kind, data = frame.split(b"\n")
        assert kind.startswith(b"event: ") and data.startswith(b"data: ")
        parsed = orjson.loads(data[6:])
        assert parsed["type"] == kind[7:].decode()
        events.append((kind[7:].decode(), parsed))
    assert raw.endswith(b"\n\n") or raw == b""
    return events


def _start_events(message_id: str = "msg_abc123", model: str = "claude-test") -> list[tuple[str, dict[str, Any]]]:
    message: dict[str, Any] = {
        "id": message_id, "type": "message", "role": "assistant", "model": model, "content": [],
        "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 0, "output_tokens": 0}}
    return [("message_start", {"type": "message_start", "message": message}), ("ping", {"type": "ping"})]


STREAM = [
    _sse(_chunk({"role": "assistant", "content": ""})),
    _sse(_chunk({"content": "Let me "}), _chunk({"content": "check."})),
    _sse(_chunk(_call(0, "", "call_1", "get_weather")), _chunk(_call(0, '{"city":')), _chunk(_call(0, ' "Paris"}')),
         _chunk(_call(1, '{"city": "Lyon"}', "call_2", "get_weather"))),
    _sse(_chunk({}, "tool_calls")) + b"data: [DONE]\n\n",
]


def _block(index: int, block: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return ("content_block_start", {"type": "content_block_start", "index": index, "content_block": block})


def _delta(index: int, delta: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})


def _stop(index: int) -> tuple[str, dict[str, Any]]:
    return ("content_block_stop", {"type": "content_block_stop", "index": index})


def test_a_stream_of_text_then_tool_calls() -> None:
    stream = MessagesStream("claude-test", "msg_abc123")
    out = [_events(stream.feed(piece)) for piece in STREAM]
    assert out == [
        _start_events(),
        [_block(0, {"type": "text", "text": ""}),
         _delta(0, {"type": "text_delta", "text": "Let me "}),
         _delta(0, {"type": "text_delta", "text": "check."})],
        [_stop(0),
         _block(1, {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {}}),
         _delta(1, {"type": "input_json_delta", "partial_json": '{"city":'}),
         _delta(1, {"type": "input_json_delta", "partial_json": ' "Paris"}'}),
         _stop(1),
         _block(2, {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {}}),
         _delta(2, {"type": "input_json_delta", "partial_json": '{"city": "Lyon"}'})],
        [],
    ]
    assert _events(stream.end(OPENAI_USAGE)) == [
        _stop(2),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                           "usage": ANTHROPIC_USAGE}),
        ("message_stop", {"type": "message_stop"}),
    ]
    assert stream.feed(STREAM[1]) == b"" and stream.end(OPENAI_USAGE) == b""  # nothing after the end


def test_a_stream_with_nothing_fed_and_text_after_a_tool_call() -> None:
    empty = MessagesStream("m", "msg_1")
    assert _events(empty.end({})) == [
        *_start_events("msg_1", "m"),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                           "usage": ZERO_USAGE}),
        ("message_stop", {"type": "message_stop"}),
    ]
    stream = MessagesStream("m", "msg_2")
    raw = stream.feed(_sse(_chunk(_call(0, "{}")), _chunk({"content": "Done."}, "length")))
    assert _events(raw) == [
        *_start_events("msg_2", "m"),
        _block(0, {"type": "tool_use", "id": "toolu_2_0", "name": "", "input": {}}),
        _delta(0, {"type": "input_json_delta", "partial_json": "{}"}),
        _stop(0),
        _block(1, {"type": "text", "text": ""}),
        _delta(1, {"type": "text_delta", "text": "Done."}),
    ]
    assert _events(stream.end({}))[1][1]["delta"]["stop_reason"] == "max_tokens"


def test_a_stream_ignores_comments_other_choices_and_usage_chunks() -> None:
    stream = MessagesStream("m", "msg_5")
    other = {**_chunk({"content": "B"}), "choices": [{"index": 1, "delta": {"content": "B"}, "finish_reason": None}]}
    usage_only = {**_chunk({}), "choices": [], "usage": {"prompt_tokens": 1}}
    raw = stream.feed(b": keep-alive\n\n" + _sse(other, usage_only, _chunk({"content": "A"})))
    assert _events(raw)[2:] == [_block(0, {"type": "text", "text": ""}), _delta(0, {"type": "text_delta", "text": "A"})]


def test_a_stream_that_fails() -> None:
    stream = MessagesStream("m", "msg_3")
    stream.feed(_sse(_chunk({"content": "Hal"})))
    assert _events(stream.error(UpstreamTimeout("upstream timed out"))) == [
        ("error", {"type": "error", "error": {"type": "timeout_error", "message": "upstream timed out"}})]
    assert stream.feed(_sse(_chunk({"content": "f"}))) == b"" and stream.end({}) == b""


# --- the official anthropic client reads what we write --------------------------------------------


def _client(status: int, content: bytes, content_type: str = "application/json") -> Any:
    """An anthropic client whose every request is answered with `content`."""
    anthropic = pytest.importorskip("anthropic")
    http = getattr(anthropic._base_client, "httpx2", None) or httpx  # newer SDKs are built on httpx2

    def answer(request: Any) -> Any:
        return http.Response(status, content=content, headers={"content-type": content_type})

    client = http.Client(transport=http.MockTransport(answer))
    return anthropic.Anthropic(api_key="k", base_url="http://gateway.test", http_client=client, max_retries=0)


def test_the_anthropic_client_accumulates_the_stream() -> None:
    stream = MessagesStream("claude-test", "msg_abc123")
    raw = b"".join(stream.feed(piece) for piece in STREAM) + stream.end(OPENAI_USAGE)
    client = _client(200, raw, "text/event-stream")
    with client.messages.stream(model="claude-test", max_tokens=10, messages=[{"role": "user", "content": "x"}]) as s:
        final = s.get_final_message()
    assert [block.type for block in final.content] == ["text", "tool_use", "tool_use"]
    assert final.content[0].text == "Let me check."
    assert (final.content[1].input, final.content[2].input) == ({"city": "Paris"}, {"city": "Lyon"})
    assert final.stop_reason == "tool_use"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (100, 200)
    assert (final.usage.cache_read_input_tokens, final.usage.cache_creation_input_tokens) == (2000, 1500)


def test_the_anthropic_client_parses_messages_and_errors() -> None:
    anthropic = pytest.importorskip("anthropic")
    body = orjson.dumps(chat_to_message(_completion({"role": "assistant", "content": "Hi"}, usage=OPENAI_USAGE),
                                        "claude-test"))
    message = _client(200, body).messages.create(model="claude-test", max_tokens=10,
                                                 messages=[{"role": "user", "content": "x"}])
    assert message.content[0].text == "Hi"
    assert message.usage.cache_creation is not None and message.usage.cache_creation.ephemeral_1h_input_tokens == 500
    cases: list[tuple[GatewayError, type[Exception]]] = [
        (InvalidRequest("bad"), anthropic.BadRequestError),
        (AuthenticationFailed("who"), anthropic.AuthenticationError),
        (RateLimited("slow down"), anthropic.RateLimitError),
        (ServiceUnavailable("busy"), anthropic.InternalServerError),
    ]
    for exc, expected in cases:
        failing = _client(exc.status_code, error_body(exc))
        with pytest.raises(expected) as caught:
            failing.messages.create(model="m", max_tokens=10, messages=[{"role": "user", "content": "x"}])
        expected_body = {"type": anthropic_error_type(exc.status_code), "message": exc.message}
        assert getattr(caught.value, "body", None) == {"type": "error", "error": expected_body}


def test_the_anthropic_client_raises_a_mid_stream_error() -> None:
    anthropic = pytest.importorskip("anthropic")
    stream = MessagesStream("m", "msg_4")
    raw = stream.feed(_sse(_chunk({"content": "Hal"}))) + stream.error(UpstreamError("upstream went away"))
    with pytest.raises(anthropic.APIStatusError) as caught, _client(200, raw, "text/event-stream").messages.stream(
            model="m", max_tokens=10, messages=[{"role": "user", "content": "x"}]) as s:
        s.get_final_message()
    assert "upstream went away" in str(caught.value)
