"""The Responses API translator: requests to chat, completions and chunk streams back, checked
against the openai SDK's own types and stream accumulator."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import orjson
import pydantic
import pytest
from openai import omit
from openai.lib.streaming.responses import ResponseStreamState
from openai.types.responses import Response, ResponseStreamEvent

from gateway.errors import InvalidRequest, UpstreamError
from gateway.formats.responses import (
    ResponsesStream,
    chat_to_response,
    response_to_chat_messages,
    responses_to_chat,
    responses_usage,
)

EVENTS: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(ResponseStreamEvent)
RESPONSE_ID = "resp_abc"
CREATED_AT = 1_700_000_000
COST_DETAILS = {"input": 0.0001, "cached_input": 0.0002, "cache_write": 0.00003, "output": 0.0009, "reasoning": 0.0}
CHAT_USAGE = {
    "prompt_tokens": 1200,
    "completion_tokens": 300,
    "total_tokens": 1500,
    "prompt_tokens_details": {"cached_tokens": 1000, "cache_write_tokens": 150},
    "completion_tokens_details": {"reasoning_tokens": 120},
    "cost": 0.00123,
    "cost_details": COST_DETAILS,
}
RESPONSES_USAGE = {
    "input_tokens": 1200,
    "input_tokens_details": {"cached_tokens": 1000, "cache_write_tokens": 150},
    "output_tokens": 300,
    "output_tokens_details": {"reasoning_tokens": 120},
    "total_tokens": 1500,
    "cost": 0.00123,
    "cost_details": COST_DETAILS,
}
WEATHER_TOOL = {"type": "function", "name": "weather", "description": "Weather now", "parameters": {"type": "object"}}


# ---- requests ----------------------------------------------------------------------------------


def test_string_input_is_one_user_message() -> None:
    assert responses_to_chat({"model": "standard", "input": "Hello"}) == {
        "model": "standard",
        "messages": [{"role": "user", "content": "Hello"}],
    }


def test_instructions_and_message_items() -> None:
    body = {
        "model": "gpt-4.1-mini",
        "instructions": "Be brief.",
        "input": [
            {"role": "developer", "content": "Answer in French."},
            {"type": "message", "role": "system", "content": [{"type": "input_text", "text": "One"},
                                                              {"type": "input_text", "text": "Two"}]},
            {"role": "user", "content": [{"type": "input_text", "text": "Hi"}]},
            {"type": "message", "id": "msg_old", "status": "completed", "role": "assistant",
             "content": [{"type": "output_text", "text": "Salut", "annotations": []}]},
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {"role": "user", "content": "Merci"},
        ],
    }
    assert responses_to_chat(body)["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "system", "content": "Answer in French."},
        {"role": "system", "content": "One\nTwo"},
        {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
        {"role": "assistant", "content": "Salut"},
        {"role": "user", "content": "Merci"},
    ]


def test_images_become_image_url_parts() -> None:
    content = [
        {"type": "input_text", "text": "What is this?"},
        {"type": "input_image", "image_url": "https://example.com/cat.png", "detail": "low"},
        {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo="},
    ]
    assert responses_to_chat({"model": "m", "input": [{"role": "user", "content": content}]})["messages"] == [
        {"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "low"}},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        ]},
    ]


def test_function_calls_merge_into_the_assistant_message_and_outputs_become_tool_messages() -> None:
    body = {
        "model": "m",
        "input": [
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {"role": "assistant", "content": "Checking."},
            {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "weather",
             "arguments": '{"city":"Paris"}', "status": "completed"},
            {"type": "function_call", "call_id": "call_2", "name": "weather", "arguments": '{"city":"Rome"}'},
            {"type": "function_call_output", "call_id": "call_1", "output": "18C"},
            {"type": "function_call_output", "call_id": "call_2",
             "output": [{"type": "input_text", "text": "21C"}, {"type": "input_text", "text": "sunny"}]},
            {"type": "function_call", "call_id": "call_3", "name": "weather", "arguments": '{"city":"Oslo"}'},
        ],
    }
    assert responses_to_chat(body)["messages"] == [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"role": "assistant", "content": "Checking.", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Paris"}'}},
            {"id": "call_2", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Rome"}'}},
        ]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
        {"role": "tool", "tool_call_id": "call_2", "content": "21C\nsunny"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_3", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Oslo"}'}},
        ]},
    ]


def test_tools_tool_choice_text_format_reasoning_and_options() -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    body = {
        "model": "premium",
        "input": "Where?",
        "tools": [WEATHER_TOOL, {"type": "function", "name": "clock", "parameters": {"type": "object"},
                                 "strict": True}],
        "tool_choice": {"type": "function", "name": "weather"},
        "parallel_tool_calls": False,
        "text": {"format": {"type": "json_schema", "name": "place", "schema": schema, "strict": True,
                            "description": "A place"}},
        "reasoning": {"effort": "low", "summary": "auto"},
        "max_output_tokens": 500,
        "temperature": 0.2,
        "top_p": 0.9,
        "user": "u-1",
        "stream": True,
        "metadata": {"k": "v"},
        "store": True,
        "truncation": "auto",
        "include": ["reasoning.encrypted_content"],
        "service_tier": "auto",
        "prompt_cache_key": "pk",
        "safety_identifier": "sid",
        "previous_response_id": "resp_prev",
    }
    assert responses_to_chat(body) == {
        "model": "premium",
        "messages": [{"role": "user", "content": "Where?"}],
        "tools": [
            {"type": "function", "function": {"name": "weather", "description": "Weather now",
                                              "parameters": {"type": "object"}}},
            {"type": "function", "function": {"name": "clock", "parameters": {"type": "object"}, "strict": True}},
        ],
        "tool_choice": {"type": "function", "function": {"name": "weather"}},
        "response_format": {"type": "json_schema", "json_schema": {"name": "place", "schema": schema, "strict": True,
                                                                   "description": "A place"}},
        "temperature": 0.2,
        "top_p": 0.9,
        "user": "u-1",
        "parallel_tool_calls": False,
        "stream": True,
        "max_completion_tokens": 500,
        "reasoning_effort": "low",
        "stream_options": {"include_usage": True},
    }


@pytest.mark.parametrize(("text", "expected"), [
    ({"format": {"type": "json_object"}}, {"response_format": {"type": "json_object"}}),
    ({"format": {"type": "text"}}, {}),
    ({"verbosity": "low"}, {}),
])
def test_text_formats(text: dict[str, Any], expected: dict[str, Any]) -> None:
    chat = responses_to_chat({"model": "m", "input": "x", "text": text})
    assert chat == {"model": "m", "messages": [{"role": "user", "content": "x"}], **expected}


def test_tool_settings_without_tools_are_left_out() -> None:
    body = {"model": "m", "input": "x", "tools": [], "tool_choice": "auto", "parallel_tool_calls": True}
    assert responses_to_chat(body) == {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    with_tools = responses_to_chat({**body, "tools": [WEATHER_TOOL], "tool_choice": "required"})
    assert (with_tools["tool_choice"], with_tools["parallel_tool_calls"]) == ("required", True)


def test_history_goes_after_the_system_message_and_before_the_input() -> None:
    history = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    chat = responses_to_chat({"model": "m", "instructions": "Be kind.", "input": "And now?"}, history)
    assert chat["messages"] == [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "And now?"},
    ]
    assert responses_to_chat({"model": "m", "input": "And now?"}, history)["messages"][:2] == history


def _user(*parts: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"role": "user", "content": list(parts)}]


@pytest.mark.parametrize(("body", "param", "fragment"), [
    ([], None, "must be a JSON object"),
    ({"input": "x"}, "model", "'model' is required"),
    ({"model": 4, "input": "x"}, "model", "'model' is required"),
    ({"model": "m"}, "input", "'input' is required"),
    ({"model": "m", "input": {"role": "user"}}, "input", "'input' is required"),
    ({"model": "m", "input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0]", "'item_reference'"),
    ({"model": "m", "input": [{"type": "web_search_call", "id": "ws"}]}, "input[0]", "'web_search_call'"),
    ({"model": "m", "input": [{"role": "tool", "content": "x"}]}, "input[0].role", "must be user, system"),
    ({"model": "m", "input": _user({"type": "input_file", "file_id": "file-1"})}, "input[0].content[0]",
     "input_file parts are only available on OpenAI models served natively"),
    ({"model": "m", "input": _user({"type": "input_image", "file_id": "file-1"})}, "input[0].content[0]",
     "images by file_id"),
    ({"model": "m", "input": [{"type": "function_call", "name": "f"}]}, "input[0]", "needs call_id and name"),
    ({"model": "m", "input": [{"type": "function_call_output", "output": "x"}]}, "input[0].call_id", "call_id"),
    ({"model": "m", "input": "x", "tools": [{"type": "web_search_preview"}]}, "tools[0]",
     "tool type 'web_search_preview' is only available on OpenAI models served natively"),
    ({"model": "m", "input": "x", "tools": [{"type": "file_search", "vector_store_ids": []}]}, "tools[0]",
     "'file_search'"),
    ({"model": "m", "input": "x", "tools": [{"type": "code_interpreter"}]}, "tools[0]", "'code_interpreter'"),
    ({"model": "m", "input": "x", "tools": [{"type": "mcp", "server_label": "s"}]}, "tools[0]", "'mcp'"),
    ({"model": "m", "input": "x", "tool_choice": {"type": "file_search"}}, "tool_choice", "'file_search'"),
    ({"model": "m", "input": "x", "text": {"format": {"type": "json_schema"}}}, "text.format", "json_schema"),
    ({"model": "m", "input": "x", "background": True}, "background", "background responses"),
    ({"model": "m", "input": "x", "top_logprobs": 2}, "top_logprobs", "'top_logprobs'"),
    ({"model": "m", "input": "x", "conversation": "conv_1"}, "conversation", "'conversation'"),
])
def test_invalid_requests_name_the_parameter(body: Any, param: str | None, fragment: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        responses_to_chat(body)
    assert raised.value.param == param
    assert fragment in raised.value.message


# ---- responses ---------------------------------------------------------------------------------


def _completion(message: dict[str, Any], finish: str = "stop", usage: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "claude-sonnet-4",
        "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish}],
        "usage": usage or CHAT_USAGE,
    }


def _expected_response(output: list[dict[str, Any]], **overrides: Any) -> dict[str, Any]:
    return {
        "id": RESPONSE_ID, "object": "response", "created_at": CREATED_AT, "status": "completed",
        "error": None, "incomplete_details": None, "model": "claude-sonnet-4", "output": output,
        "instructions": None, "max_output_tokens": None, "previous_response_id": None, "reasoning": None,
        "temperature": None, "top_p": None, "user": None, "parallel_tool_calls": True, "store": True,
        "text": {"format": {"type": "text"}}, "tool_choice": "auto", "tools": [], "metadata": {},
        "usage": RESPONSES_USAGE, **overrides,
    }


def test_a_text_completion_becomes_a_response() -> None:
    request = {"model": "standard", "input": "Hi", "instructions": "Be brief.", "temperature": 0.5}
    response = chat_to_response(_completion({"content": "Bonjour"}), request, RESPONSE_ID, CREATED_AT)
    assert response == _expected_response(
        [{"type": "message", "id": "msg_abc", "status": "completed", "role": "assistant",
          "content": [{"type": "output_text", "text": "Bonjour", "annotations": [], "logprobs": []}]}],
        instructions="Be brief.", temperature=0.5,
    )
    parsed = Response.model_validate(response)
    assert parsed.output_text == "Bonjour"
    assert parsed.usage is not None and parsed.usage.input_tokens_details.cached_tokens == 1000
    assert parsed.usage.model_dump()["cost"] == 0.00123


def test_tool_calls_become_function_call_items() -> None:
    calls = [
        {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Paris"}'}},
        {"id": "call_2", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Rome"}'}},
    ]
    request = {"model": "m", "input": "x", "tools": [WEATHER_TOOL], "tool_choice": "required"}
    completion = _completion({"content": "Checking.", "tool_calls": calls}, "tool_calls")
    response = chat_to_response(completion, request, RESPONSE_ID, CREATED_AT)
    assert response["output"] == [
        {"type": "message", "id": "msg_abc", "status": "completed", "role": "assistant",
         "content": [{"type": "output_text", "text": "Checking.", "annotations": [], "logprobs": []}]},
        {"type": "function_call", "id": "fc_abc_0", "call_id": "call_1", "name": "weather",
         "arguments": '{"city":"Paris"}', "status": "completed"},
        {"type": "function_call", "id": "fc_abc_1", "call_id": "call_2", "name": "weather",
         "arguments": '{"city":"Rome"}', "status": "completed"},
    ]
    assert response["tools"] == [WEATHER_TOOL] and response["tool_choice"] == "required"
    assert Response.model_validate(response).output_text == "Checking."
    # the stored response becomes the assistant turn of a continuation's history
    assert response_to_chat_messages(response) == [{"role": "assistant", "content": "Checking.", "tool_calls": calls}]
    only_calls = chat_to_response(_completion({"content": None, "tool_calls": calls}), request, RESPONSE_ID, 1)
    assert response_to_chat_messages(only_calls) == [{"role": "assistant", "content": None, "tool_calls": calls}]
    assert response_to_chat_messages({"output": []}) == []


@pytest.mark.parametrize(("finish", "reason"), [("length", "max_output_tokens"), ("content_filter", "content_filter")])
def test_a_cut_off_completion_is_incomplete(finish: str, reason: str) -> None:
    request = {"model": "m", "input": "x", "max_output_tokens": 16}
    response = chat_to_response(_completion({"content": "Once upon"}, finish), request, RESPONSE_ID, CREATED_AT)
    assert response == _expected_response(
        [{"type": "message", "id": "msg_abc", "status": "incomplete", "role": "assistant",
          "content": [{"type": "output_text", "text": "Once upon", "annotations": [], "logprobs": []}]}],
        status="incomplete", incomplete_details={"reason": reason}, max_output_tokens=16,
    )
    assert Response.model_validate(response).output_text == "Once upon"


def test_usage_in_the_responses_convention() -> None:
    assert responses_usage(CHAT_USAGE) == RESPONSES_USAGE
    assert responses_usage({"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}) == {
        "input_tokens": 7,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": 3,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 10,
    }


# ---- streams -----------------------------------------------------------------------------------


def _chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
    body = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "claude-sonnet-4",
            "choices": [choice]}
    return b"data: " + orjson.dumps(body) + b"\n\n"


def _call_piece(index: int, arguments: str, call_id: str | None = None) -> bytes:
    call: dict[str, Any] = {"index": index, "function": {"arguments": arguments}}
    if call_id is not None:
        call.update(id=call_id, type="function", function={"name": "weather", "arguments": arguments})
    return _chunk({"tool_calls": [call]})


def _events(raw: bytes) -> list[dict[str, Any]]:
    """Parses the SSE bytes, checking each frame's `event:` against its data and the SDK's types."""
    events = []
    for frame in raw.decode().split("\n\n")[:-1]:
        event_line, data_line = frame.split("\n")
        event = orjson.loads(data_line.removeprefix("data: "))
        assert event_line == f"event: {event['type']}"
        EVENTS.validate_python(event)
        events.append(event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    return events


def _sdk_client(raw: bytes) -> openai.OpenAI:
    def reply(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=raw, headers={"content-type": "text/event-stream"})

    return openai.OpenAI(api_key="k", base_url="http://gateway.test/v1", max_retries=0,
                         http_client=httpx.Client(transport=httpx.MockTransport(reply)))  # type: ignore[arg-type]


REQUEST = {"model": "standard", "input": "Weather in Paris?", "tools": [WEATHER_TOOL], "stream": True}
CHUNKS = [
    _chunk({"role": "assistant", "content": ""}) + _chunk({"content": "Let me "}) + _chunk({"content": "check."}),
    _call_piece(0, "", "call_1"),
    _call_piece(0, '{"city":') + _call_piece(0, '"Paris"}'),
    _chunk({}, "tool_calls") + b"data: [DONE]\n\n",
]
STREAM_TYPES = [
    "response.created", "response.in_progress",
    "response.output_item.added", "response.content_part.added",
    "response.output_text.delta", "response.output_text.delta",
    "response.output_text.done", "response.content_part.done", "response.output_item.done",
    "response.output_item.added", "response.function_call_arguments.delta", "response.function_call_arguments.delta",
    "response.function_call_arguments.done", "response.output_item.done",
    "response.completed",
]


def _run(chunks: list[bytes], request: dict[str, Any] = REQUEST) -> tuple[ResponsesStream, bytes]:
    stream = ResponsesStream(request, RESPONSE_ID, CREATED_AT)
    raw = b"".join(stream.feed(chunk) for chunk in chunks)
    return stream, raw + stream.end(CHAT_USAGE)


def test_a_chunk_stream_becomes_the_official_event_sequence() -> None:
    stream, raw = _run(CHUNKS)
    events = _events(raw)
    assert [e["type"] for e in events] == STREAM_TYPES
    created, in_progress = events[0]["response"], events[1]["response"]
    assert created == in_progress and created["status"] == "in_progress" and created["output"] == []
    assert created["id"] == RESPONSE_ID and created["model"] == "claude-sonnet-4"
    assert events[2]["item"] == {"type": "message", "id": "msg_abc", "status": "in_progress", "role": "assistant",
                                 "content": []}
    assert events[3]["part"] == {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
    assert [(e["item_id"], e["output_index"], e["content_index"], e["delta"]) for e in events[4:6]] == [
        ("msg_abc", 0, 0, "Let me "), ("msg_abc", 0, 0, "check.")]
    assert events[6]["text"] == "Let me check." and events[7]["part"]["text"] == "Let me check."
    assert events[8]["item"]["status"] == "completed"
    assert events[9] == {"type": "response.output_item.added", "sequence_number": 9, "output_index": 1,
                         "item": {"type": "function_call", "id": "fc_abc_0", "call_id": "call_1", "name": "weather",
                                  "arguments": "", "status": "in_progress"}}
    assert [e["delta"] for e in events[10:12]] == ['{"city":', '"Paris"}']
    assert events[12]["arguments"] == '{"city":"Paris"}' and events[12]["item_id"] == "fc_abc_0"
    completed = events[-1]["response"]
    assert completed["status"] == "completed" and completed["usage"] == RESPONSES_USAGE
    # the same Response the non-streaming path builds from the same answer, and the one kept for storing
    calls = [{"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Paris"}'}}]
    completion = _completion({"content": "Let me check.", "tool_calls": calls}, "tool_calls")
    assert completed == chat_to_response(completion, REQUEST, RESPONSE_ID, CREATED_AT) == stream.response
    assert Response.model_validate(completed).output_text == "Let me check."


def test_the_sdk_accumulates_the_stream() -> None:
    _, raw = _run(CHUNKS)
    state: ResponseStreamState[Any] = ResponseStreamState(input_tools=omit, text_format=omit)
    for event in _events(raw):
        state.handle_event(EVENTS.validate_python(event))
    final = state._completed_response
    assert final is not None and final.output_text == "Let me check."
    client = _sdk_client(raw)
    with client.responses.stream(model="standard", input="Weather in Paris?") as stream:
        types = [event.type for event in stream]
        final = stream.get_final_response()
    assert types == STREAM_TYPES
    assert final.output_text == "Let me check." and final.id == RESPONSE_ID
    call = final.output[1]
    assert call.type == "function_call" and call.arguments == '{"city":"Paris"}' and call.call_id == "call_1"
    assert final.usage is not None and final.usage.model_dump()["cost"] == 0.00123
    assert [event.type for event in client.responses.create(model="standard", input="x", stream=True)] == STREAM_TYPES


def test_a_cut_off_stream_ends_incomplete() -> None:
    stream, raw = _run([_chunk({"content": "Once upon"}), _chunk({}, "length")], {"model": "m", "input": "x"})
    events = _events(raw)
    assert [e["type"] for e in events][-2:] == ["response.output_item.done", "response.incomplete"]
    assert events[-2]["item"]["status"] == "incomplete"
    assert events[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert events[-1]["response"] == chat_to_response(
        _completion({"content": "Once upon"}, "length"), {"model": "m", "input": "x"}, RESPONSE_ID, CREATED_AT)
    assert stream.end(CHAT_USAGE) == b"" and stream.feed(_chunk({"content": "more"})) == b""


def test_frames_split_across_feeds_and_text_after_a_tool_call() -> None:
    whole = _call_piece(0, "{}", "call_1") + _chunk({"content": "Done."}) + _chunk({}, "stop")
    stream = ResponsesStream({"model": "m", "input": "x"}, RESPONSE_ID, CREATED_AT)
    raw = stream.feed(whole[:10]) + stream.feed(whole[10:77]) + stream.feed(whole[77:]) + stream.end(CHAT_USAGE)
    output = _events(raw)[-1]["response"]["output"]
    assert [(item["type"], item["id"], item["status"]) for item in output] == [
        ("function_call", "fc_abc_0", "completed"), ("message", "msg_abc", "completed")]
    assert Response.model_validate(stream.response).output_text == "Done."


def test_an_empty_stream_still_opens_and_completes() -> None:
    stream = ResponsesStream({"model": "m", "input": "x"}, RESPONSE_ID, CREATED_AT)
    events = _events(stream.end({}))
    assert [e["type"] for e in events] == ["response.created", "response.in_progress", "response.completed"]
    assert events[-1]["response"]["output"] == [] and events[-1]["response"]["model"] == "m"


def test_a_failure_emits_error_then_response_failed() -> None:
    stream = ResponsesStream({"model": "m", "input": "x"}, RESPONSE_ID, CREATED_AT)
    raw = stream.feed(_chunk({"content": "Part"})) + stream.error(UpstreamError("upstream went away"))
    events = _events(raw)
    assert [e["type"] for e in events][-2:] == ["error", "response.failed"]
    assert events[-2] == {"type": "error", "sequence_number": 5, "code": "upstream_error",
                          "message": "upstream went away", "param": None}
    failed = events[-1]["response"]
    assert failed["status"] == "failed"
    assert failed["error"] == {"code": "server_error", "message": "upstream went away"}
    assert failed["output"][0]["status"] == "incomplete" and failed["output"][0]["content"][0]["text"] == "Part"
    assert stream.response == failed and stream.end(CHAT_USAGE) == b""
    with _sdk_client(raw).responses.stream(model="m", input="x") as sdk_stream:
        assert [event.type for event in sdk_stream][-2:] == ["error", "response.failed"]
        with pytest.raises(RuntimeError):
            sdk_stream.get_final_response()


def test_an_in_band_error_chunk_fails_the_response() -> None:
    stream = ResponsesStream({"model": "m", "input": "x"}, RESPONSE_ID, CREATED_AT)
    error = {"error": {"message": "slow down", "type": "rate_limit_exceeded", "code": "rate_limit_exceeded"}}
    events = _events(stream.feed(b"data: " + orjson.dumps(error) + b"\n\n" + _chunk({"content": "ignored"})))
    assert [e["type"] for e in events] == ["response.created", "response.in_progress", "error", "response.failed"]
    assert events[-1]["response"]["error"] == {"code": "rate_limit_exceeded", "message": "slow down"}
    assert events[-1]["response"]["output"] == []
