"""The legacy Completions API translator (`gateway/formats/completions.py`), pure: each mapping
and each refusal as exact dicts, and the stream's exact chunks."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from gateway.errors import InvalidRequest, UpstreamError
from gateway.formats.completions import CompletionsStream, chat_to_completion, completions_to_chat, wants_usage

USAGE = {"prompt_tokens": 1000, "completion_tokens": 50, "total_tokens": 1050,
         "prompt_tokens_details": {"cached_tokens": 400}, "cost": 0.0025,
         "cost_details": {"input": 0.0015, "cached_input": 0.0005, "output": 0.0005}}


def sse(*payloads: dict[str, Any]) -> bytes:
    return b"".join(b"data: " + orjson.dumps(p) + b"\n\n" for p in payloads)


def chunk(choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"id": "chatcmpl-abc", "object": "chat.completion.chunk", "created": 1700000000, "model": "gpt-4o-test",
            "choices": choices, **extra}


def events(raw: bytes) -> list[Any]:
    """The data of each SSE event, decoded ("[DONE]" kept as the string)."""
    assert raw.endswith(b"\n\n")
    out: list[Any] = []
    for frame in raw.split(b"\n\n")[:-1]:
        assert frame.startswith(b"data: ")
        data = frame[6:]
        out.append(data.decode() if data == b"[DONE]" else orjson.loads(data))
    return out


# ------------------------------------------------------------------------------ request


def test_a_string_prompt_is_one_user_message_and_sampling_fields_are_kept() -> None:
    body = {"model": "gpt-test", "prompt": "Say hi", "max_tokens": 20, "temperature": 0.5, "top_p": 0.9,
            "stop": ["\n"], "n": 2, "seed": 7, "user": "u-1", "presence_penalty": 0.1, "frequency_penalty": 0.2,
            "logit_bias": {"50256": -100}, "echo": False, "best_of": 1, "logprobs": None, "suffix": None}
    assert completions_to_chat(body) == {
        "model": "gpt-test", "messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 20,
        "temperature": 0.5, "top_p": 0.9, "stop": ["\n"], "n": 2, "seed": 7, "user": "u-1",
        "presence_penalty": 0.1, "frequency_penalty": 0.2,
    }


def test_a_list_of_one_string_is_the_prompt_and_nulls_are_dropped() -> None:
    body = {"model": "cheap", "prompt": ["Once upon a time"], "max_tokens": None, "temperature": None}
    assert completions_to_chat(body) == {"model": "cheap",
                                         "messages": [{"role": "user", "content": "Once upon a time"}]}


def test_a_stream_asks_the_pipeline_for_its_usage_whatever_the_client_wants() -> None:
    for options in (None, {"include_usage": False}, {"include_usage": True}):
        body = {"model": "gpt-test", "prompt": "hi", "stream": True, "stream_options": options}
        assert completions_to_chat(body) == {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}],
                                             "stream": True, "stream_options": {"include_usage": True}}
    assert completions_to_chat({"model": "gpt-test", "prompt": "hi", "stream": False}) == {
        "model": "gpt-test", "messages": [{"role": "user", "content": "hi"}], "stream": False}


def test_wants_usage_only_when_the_client_asks() -> None:
    assert wants_usage({"stream_options": {"include_usage": True}}) is True
    assert wants_usage({"stream_options": {"include_usage": False}}) is False
    assert wants_usage({"stream_options": {}}) is False
    assert wants_usage({}) is False


@pytest.mark.parametrize(
    ("extra", "param", "message"),
    [
        ({"suffix": "\n}"}, "suffix",
         "'suffix' (text insertion) is not supported by the gateway (it serves completions through chat models)"),
        ({"echo": True}, "echo",
         "'echo: true' is not supported by the gateway (it serves completions through chat models)"),
        ({"logprobs": 0}, "logprobs",
         "'logprobs' is not supported by the gateway (it serves completions through chat models); send the request "
         "to /v1/chat/completions with 'logprobs' and 'top_logprobs' instead"),
        ({"best_of": 3}, "best_of",
         "'best_of' greater than 1 is not supported by the gateway (it serves completions through chat models); "
         "use 'n' for several completions"),
        ({"best_of": "2"}, "best_of", "'best_of' must be an integer"),
        ({"prompt": [1734, 318]}, "prompt",
         "token-id prompts are not supported by the gateway: send the prompt as text"),
        ({"prompt": [[1734, 318]]}, "prompt",
         "token-id prompts are not supported by the gateway: send the prompt as text"),
        ({"prompt": ["one", "two"]}, "prompt",
         "several prompts in one request are not supported (2 sent): send one request per prompt"),
        ({"prompt": []}, "prompt", "'prompt' is required: a string, or a list holding exactly one string"),
        ({"prompt": None}, "prompt", "'prompt' is required: a string, or a list holding exactly one string"),
        ({"model": None}, "model", "'model' is required and must be a string"),
        ({"stream_options": "yes"}, "stream_options", "'stream_options' must be an object"),
        ({"stream_options": {"include_usage": "yes"}}, "stream_options.include_usage",
         "'stream_options.include_usage' must be a boolean"),
    ],
)
def test_what_only_a_completion_model_can_do_is_refused_naming_the_parameter(
        extra: dict[str, Any], param: str, message: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        completions_to_chat({"model": "gpt-test", "prompt": "hi", **extra})
    assert refused.value.body() == {"error": {"message": message, "type": "invalid_request_error", "param": param,
                                              "code": None}}
    assert refused.value.status_code == 400


# ------------------------------------------------------------------------------ answer


def test_a_chat_completion_is_a_text_completion_with_every_choice_and_the_usage_as_given() -> None:
    completion = {
        "id": "chatcmpl-abc", "object": "chat.completion", "created": 1700000000, "model": "gpt-4o-test",
        "system_fingerprint": "fp_1",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "Hello"}, "finish_reason": "stop",
             "logprobs": None},
            {"index": 1, "message": {"role": "assistant", "content": "Hi the"}, "finish_reason": "length"},
            {"index": 2, "message": {"role": "assistant", "content": None, "refusal": "No."},
             "finish_reason": "content_filter"},
        ],
        "usage": USAGE,
    }
    assert chat_to_completion(completion) == {
        "id": "cmpl-abc", "object": "text_completion", "created": 1700000000, "model": "gpt-4o-test",
        "system_fingerprint": "fp_1",
        "choices": [
            {"text": "Hello", "index": 0, "logprobs": None, "finish_reason": "stop"},
            {"text": "Hi the", "index": 1, "logprobs": None, "finish_reason": "length"},
            {"text": "", "index": 2, "logprobs": None, "finish_reason": "content_filter"},
        ],
        "usage": USAGE,
    }


def test_a_chat_finish_reason_a_completion_cannot_have_is_stop() -> None:
    completion = {"id": "chatcmpl-x", "created": 1, "model": "m", "usage": None,
                  "choices": [{"index": 0, "message": {"content": "ok"}, "finish_reason": "tool_calls"}]}
    assert chat_to_completion(completion)["choices"] == [
        {"text": "ok", "index": 0, "logprobs": None, "finish_reason": "stop"}]


# ------------------------------------------------------------------------------ stream

CHAT_STREAM = sse(
    chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]),
    chunk([{"index": 0, "delta": {"content": "Hello"}, "finish_reason": None}]),
    chunk([{"index": 0, "delta": {"content": " world"}, "finish_reason": None}]),
    chunk([{"index": 0, "delta": {}, "finish_reason": "stop"}]),
)
HEAD = {"id": "cmpl-abc", "object": "text_completion", "created": 1700000000, "model": "gpt-4o-test"}
TEXT_CHUNKS = [
    {**HEAD, "choices": [{"text": "Hello", "index": 0, "logprobs": None, "finish_reason": None}]},
    {**HEAD, "choices": [{"text": " world", "index": 0, "logprobs": None, "finish_reason": None}]},
    {**HEAD, "choices": [{"text": "", "index": 0, "logprobs": None, "finish_reason": "stop"}]},
]


def test_the_stream_is_text_completion_chunks_then_done() -> None:
    out = CompletionsStream("gpt-test", False, "cmpl-fallback", 1)
    assert events(out.feed(CHAT_STREAM) + out.end(USAGE)) == [*TEXT_CHUNKS, "[DONE]"]


def test_the_usage_chunk_comes_last_with_the_cost_only_when_asked() -> None:
    out = CompletionsStream("gpt-test", True, "cmpl-fallback", 1)
    assert events(out.feed(CHAT_STREAM) + out.end(USAGE)) == [
        *TEXT_CHUNKS, {**HEAD, "choices": [], "usage": USAGE}, "[DONE]"]


def test_the_stream_reassembles_events_split_anywhere_and_keeps_each_choice_index() -> None:
    raw = sse(chunk([{"index": 0, "delta": {"content": "A"}, "finish_reason": None},
                     {"index": 1, "delta": {"content": "B"}, "finish_reason": None}]))
    out = CompletionsStream("gpt-test", False, "cmpl-fallback", 1)
    assert out.feed(raw[:17]) == b""
    assert events(out.feed(raw[17:])) == [{**HEAD, "choices": [
        {"text": "A", "index": 0, "logprobs": None, "finish_reason": None},
        {"text": "B", "index": 1, "logprobs": None, "finish_reason": None}]}]


def test_a_stream_with_no_chunk_ends_under_its_own_id_and_model() -> None:
    out = CompletionsStream("gpt-test", True, "cmpl-own", 42)
    assert events(out.end(USAGE)) == [{"id": "cmpl-own", "object": "text_completion", "created": 42,
                                       "model": "gpt-test", "choices": [], "usage": USAGE}, "[DONE]"]
    assert out.end(USAGE) == b"" and out.feed(CHAT_STREAM) == b""


def test_a_failure_is_one_openai_error_event_without_done() -> None:
    out = CompletionsStream("gpt-test", True, "cmpl-fallback", 1)
    out.feed(CHAT_STREAM)
    assert events(out.error(UpstreamError("upstream went away"))) == [{"error": {
        "message": "upstream went away", "type": "upstream_error", "param": None, "code": "upstream_error"}}]
    assert out.end(USAGE) == b""


def test_an_in_band_error_is_passed_on_and_ends_the_stream() -> None:
    failure = {"error": {"message": "overloaded", "type": "server_error", "param": None, "code": None}}
    out = CompletionsStream("gpt-test", False, "cmpl-fallback", 1)
    raw = sse(chunk([{"index": 0, "delta": {"content": "A"}, "finish_reason": None}]), failure)
    assert events(out.feed(raw)) == [
        {**HEAD, "choices": [{"text": "A", "index": 0, "logprobs": None, "finish_reason": None}]}, failure]
    assert out.end(USAGE) == b""
