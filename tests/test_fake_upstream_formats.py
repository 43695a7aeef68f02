"""Tests for the fake upstream's OpenAI Responses (/v1/responses) and Embeddings (/v1/embeddings) formats."""

from __future__ import annotations

import base64
import json
import math
import struct
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pydantic
import pytest
from openai.types import CreateEmbeddingResponse
from openai.types.responses import Response, ResponseStreamEvent

from gateway.fake_upstream import FakeUpstreamThread
from gateway.fake_upstream.embeddings_format import vector

OAI_HEADERS = {"authorization": "Bearer sk-test-123"}
EVENTS: pydantic.TypeAdapter[ResponseStreamEvent] = pydantic.TypeAdapter(ResponseStreamEvent)
TOOL = [{"name": "get_weather", "arguments": '{"city": "Paris", "unit": "celsius"}'}]


@pytest.fixture(scope="module")
def server() -> Iterator[FakeUpstreamThread]:
    with FakeUpstreamThread() as fu:
        yield fu


@pytest.fixture()
def fu(server: FakeUpstreamThread) -> FakeUpstreamThread:
    server.reset()
    return server


@pytest.fixture()
def client(fu: FakeUpstreamThread) -> Iterator[openai.OpenAI]:
    c = openai.OpenAI(base_url=fu.url + "/v1", api_key="sk-test-123", max_retries=0)
    yield c
    c.close()


def _post(fu: FakeUpstreamThread, path: str, body: dict[str, Any], **kw: Any) -> httpx.Response:
    return httpx.post(fu.url + path, json=body, headers=kw.pop("headers", OAI_HEADERS), **kw)


def _responses(fu: FakeUpstreamThread, body: dict[str, Any]) -> httpx.Response:
    return _post(fu, "/v1/responses", body)


def _events(text: str) -> list[dict[str, Any]]:
    """The SSE frames of a Responses stream, each checked against the SDK's ResponseStreamEvent."""
    out = []
    for frame in text.strip().split("\n\n"):
        lines = frame.split("\n")
        assert len(lines) == 2 and lines[0].startswith("event: ") and lines[1].startswith("data: "), frame
        data = json.loads(lines[1][6:])
        assert data["type"] == lines[0][7:]
        EVENTS.validate_python(data)
        out.append(data)
    return out


def _stream(fu: FakeUpstreamThread, body: dict[str, Any]) -> list[dict[str, Any]]:
    r = _responses(fu, {**body, "stream": True})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    return _events(r.text)


# ---------------------------------------------------------------------------------------------- /v1/responses


def test_responses_non_stream_default(fu: FakeUpstreamThread, client: openai.OpenAI) -> None:
    r = client.responses.create(model="gpt-x", input="hello there world")
    assert r.output_text == "This is a simulated reply from gpt-x."
    assert (
        r.id.startswith("resp_")
        and r.id[5:].isdigit()
        and r.object == "response"
        and r.model == "gpt-x"
        and r.status == "completed"
    )
    assert r.incomplete_details is None and r.error is None and r.created_at > 0
    assert len(r.output) == 1 and r.output[0].type == "message" and r.output[0].status == "completed"
    assert r.usage is not None
    assert (r.usage.input_tokens, r.usage.output_tokens, r.usage.total_tokens) == (7, 7, 14)  # as chat counts
    assert r.usage.input_tokens_details.cached_tokens == 0 and r.usage.output_tokens_details.reasoning_tokens == 0
    body = {
        "model": "gpt-x",
        "input": "hi",
        "previous_response_id": "resp_prev",
        "store": False,
        "max_output_tokens": 50,
        "reasoning": {"effort": "low"},
        "instructions": "be brief",
    }
    raw = _responses(fu, body).json()
    n = int(r.id[5:]) + 1  # the n-th request the fake answered
    assert Response.model_validate(raw).id == f"resp_{n}"
    echoed = {k: v for k, v in body.items() if k not in ("model", "input")}
    assert {k: raw[k] for k in echoed} == echoed
    assert raw["output"][0] == {
        "id": f"msg_{n}", "type": "message", "status": "completed", "role": "assistant",
        "content": [{"type": "output_text", "text": "This is a simulated reply from gpt-x.", "annotations": [],
                     "logprobs": []}],
    }  # fmt: skip
    assert raw["usage"] == {
        "input_tokens": 11,  # "be brief" counts as a system message (4 + 2), "hi" as a user message (4 + 1)
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": 7,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 18,
    }
    plain = _responses(fu, {"model": "gpt-x", "input": "hi"}).json()
    assert plain["previous_response_id"] is None and plain["store"] is True and plain["tools"] == []


def test_responses_input_tokens_follow_the_chat_estimate(fu: FakeUpstreamThread) -> None:
    items = [
        {"role": "user", "content": "one two three"},
        {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "four five"}, {"type": "input_image", "image_url": "x"}],
        },
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "six"}]},
        {"type": "function_call", "call_id": "call_0", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_0", "output": "seven eight"},
    ]
    usage = _responses(fu, {"model": "m", "input": items, "instructions": "sys words"}).json()["usage"]
    assert usage["input_tokens"] == (4 + 2) + (4 + 3) + (4 + 2) + (4 + 1) + 4 + (4 + 2)
    chat = _post(
        fu,
        "/v1/chat/completions",
        {
            "model": "m",
            "messages": [{"role": "system", "content": "sys words"}, {"role": "user", "content": "one two three"}],
        },
    ).json()
    resp = _responses(fu, {"model": "m", "input": "one two three", "instructions": "sys words"}).json()
    assert resp["usage"]["input_tokens"] == chat["usage"]["prompt_tokens"] == 13
    assert _responses(fu, {"model": "m"}).json()["usage"]["input_tokens"] == 0


def test_responses_scripted_usage_verbatim_and_omitted(fu: FakeUpstreamThread, client: openai.OpenAI) -> None:
    usage = {
        "input_tokens": 1000, "input_tokens_details": {"cached_tokens": 800, "cache_write_tokens": 0},
        "output_tokens": 30, "output_tokens_details": {"reasoning_tokens": 27}, "total_tokens": 1030,
    }  # fmt: skip
    fu.script("u", {"reply": "a b c", "usage": usage})
    assert _responses(fu, {"model": "u", "input": "x"}).json()["usage"] == usage
    assert _stream(fu, {"model": "u", "input": "x"})[-1]["response"]["usage"] == usage
    r = client.responses.create(model="u", input="x")
    assert r.usage and r.usage.input_tokens_details.cached_tokens == 800
    assert r.usage.output_tokens_details.reasoning_tokens == 27
    fu.script("o", {"omit_usage": True})
    assert _responses(fu, {"model": "o", "input": "x"}).json()["usage"] is None
    events = _stream(fu, {"model": "o", "input": "x"})
    assert events[-1]["type"] == "response.completed" and events[-1]["response"]["usage"] is None


def test_responses_stream_event_sequence(fu: FakeUpstreamThread) -> None:
    fu.script("s", {"reply": "one two three"})
    body = {"model": "s", "input": "hello there world", "previous_response_id": "resp_0", "store": False}
    events = _stream(fu, body)
    assert [e["type"] for e in events] == [
        "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.delta", "response.output_text.delta",
        "response.output_text.done", "response.content_part.done", "response.output_item.done",
        "response.completed",
    ]  # fmt: skip
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    created = events[0]["response"]
    assert created["status"] == "in_progress" and created["output"] == [] and created["usage"] is None
    assert created["previous_response_id"] == "resp_0" and created["store"] is False
    assert [e["delta"] for e in events[4:7]] == ["one", " two", " three"]
    assert {(e["item_id"], e["output_index"], e["content_index"]) for e in events[3:9]} == {
        (events[2]["item"]["id"], 0, 0)
    }
    assert events[7]["text"] == "one two three" and events[8]["part"]["text"] == "one two three"
    assert events[9]["item"]["status"] == "completed"
    final = Response.model_validate(events[-1]["response"])
    assert final.id == created["id"] and final.status == "completed" and final.output_text == "one two three"
    assert final.usage and (final.usage.input_tokens, final.usage.output_tokens) == (7, 3)
    rec = fu.calls("s")[-1]
    assert rec["path"] == "/v1/responses" and rec["stream"] is True and rec["completed"] is True
    assert rec["chunks_sent"] == len(events)


def test_responses_sdk_stream_helper(fu: FakeUpstreamThread, client: openai.OpenAI) -> None:
    fu.script("h", {"output_tokens": 4})
    with client.responses.stream(model="h", input="hi") as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert deltas == ["tok0", " tok1", " tok2", " tok3"]
    assert final.output_text == "tok0 tok1 tok2 tok3" and final.status == "completed"
    assert final.usage and final.usage.output_tokens == 4
    kinds = [e.type for e in client.responses.create(model="h", input="hi", stream=True)]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"


def test_responses_tool_calls(fu: FakeUpstreamThread, client: openai.OpenAI) -> None:
    fu.script("t", {"tool_calls": TOOL})
    tools = [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}, "strict": False}]
    raw = _responses(fu, {"model": "t", "input": "weather?", "tools": tools}).json()
    assert raw["status"] == "completed" and raw["tools"] == tools and raw["tool_choice"] == "auto"
    assert raw["output"] == [{
        "id": f"fc_{raw['id'][5:]}_0", "type": "function_call", "status": "completed", "call_id": "call_0",
        "name": "get_weather", "arguments": TOOL[0]["arguments"],
    }]  # fmt: skip
    Response.model_validate(raw)
    fu.script("t", {"reply": "calling", "tool_calls": TOOL})
    r = client.responses.create(model="t", input="weather?")
    assert [o.type for o in r.output] == ["message", "function_call"] and r.output_text == "calling"
    events = _stream(fu, {"model": "t", "input": "weather?"})
    added = [e for e in events if e["type"] == "response.output_item.added"]
    assert [(e["output_index"], e["item"]["type"]) for e in added] == [(0, "message"), (1, "function_call")]
    assert added[1]["item"]["arguments"] == "" and added[1]["item"]["status"] == "in_progress"
    args = "".join(e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta")
    assert json.loads(args) == {"city": "Paris", "unit": "celsius"}
    done = next(e for e in events if e["type"] == "response.function_call_arguments.done")
    assert done["arguments"] == TOOL[0]["arguments"] and done["output_index"] == 1
    with client.responses.stream(model="t", input="weather?") as stream:
        final = stream.get_final_response()
    call = final.output[1]
    assert call.type == "function_call" and call.call_id == "call_0" and call.name == "get_weather"


def test_responses_incomplete_on_length(fu: FakeUpstreamThread) -> None:
    fu.script("len", {"reply": "cut short", "finish_reason": "length"})
    raw = _responses(fu, {"model": "len", "input": "x", "max_output_tokens": 2}).json()
    resp = Response.model_validate(raw)
    assert (
        resp.status == "incomplete"
        and resp.incomplete_details
        and resp.incomplete_details.reason == ("max_output_tokens")
    )
    assert raw["output"][0]["status"] == "incomplete" and "completed_at" not in raw
    events = _stream(fu, {"model": "len", "input": "x"})
    assert events[-1]["type"] == "response.incomplete"
    assert events[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}


def test_responses_status_faults(fu: FakeUpstreamThread, client: openai.OpenAI) -> None:
    fu.script("rl", {"fault": "429", "retry_after": "7", "fault_times": 1})
    r = _responses(fu, {"model": "rl", "input": "x"})
    assert r.status_code == 429 and r.headers["retry-after"] == "7"
    assert r.json()["error"] == {
        "message": "Rate limit reached for requests (simulated).",
        "type": "requests",
        "param": None,
        "code": "rate_limit_exceeded",
    }
    assert _responses(fu, {"model": "rl", "input": "x"}).status_code == 200
    fu.script("boom", {"fault": "500", "error_message": "kaput"})
    with pytest.raises(openai.InternalServerError, match="kaput"):
        client.responses.create(model="boom", input="x")
    with pytest.raises(openai.InternalServerError):
        client.responses.create(model="boom", input="x", stream=True)
    fu.script("k", {"fault": "401"})
    r = _responses(fu, {"model": "k", "input": "x"})
    assert r.status_code == 401 and "sk-test-123" in r.json()["error"]["message"]


def test_responses_stream_faults(fu: FakeUpstreamThread) -> None:
    fu.script("ev", {"fault": "error_event", "drop_after": 1, "error_message": "melted"})
    events = _stream(fu, {"model": "ev", "input": "x"})
    assert [e["type"] for e in events][-2:] == ["response.output_text.delta", "error"]
    assert events[-1] == {
        "type": "error",
        "code": "server_error",
        "message": "melted",
        "param": None,
        "sequence_number": len(events) - 1,
    }
    fu.script("d", {"fault": "drop", "drop_after": 2})
    lines: list[str] = []
    with pytest.raises(httpx.RemoteProtocolError):
        with httpx.stream(
            "POST", fu.url + "/v1/responses", json={"model": "d", "input": "x", "stream": True}, headers=OAI_HEADERS
        ) as r:
            lines.extend(r.iter_lines())
    rec = fu.calls("d")[-1]
    assert rec["completed"] is False and rec["chunks_sent"] == 6  # created, in_progress, item, part, 2 deltas
    assert not any("response.completed" in line for line in lines)
    with pytest.raises(httpx.RemoteProtocolError):
        _responses(fu, {"model": "d", "input": "x"})
    fu.script("bad", {"fault": "malformed"})
    r = _responses(fu, {"model": "bad", "input": "x"})
    assert r.status_code == 200
    with pytest.raises(ValueError):
        r.json()
    text = _responses(fu, {"model": "bad", "input": "x", "stream": True}).text
    frames = text.strip().split("\n\n")
    assert frames[-1] == "event: response.output_text.delta\ndata: {broken"
    assert [e["type"] for e in _events("\n\n".join(frames[:-1]))][-1] == "response.output_text.delta"


def test_responses_latency_ttft_and_itl(fu: FakeUpstreamThread) -> None:
    fu.script("lat", {"latency_ms": 150})
    t0 = time.monotonic()
    assert _responses(fu, {"model": "lat", "input": "x"}).status_code == 200
    assert time.monotonic() - t0 >= 0.15
    fu.script("slow", {"reply": "a b c", "ttft_ms": 100, "itl_ms": 50})
    stamps: dict[str, list[float]] = {}
    t0 = time.monotonic()
    with httpx.stream(
        "POST", fu.url + "/v1/responses", json={"model": "slow", "input": "x", "stream": True}, headers=OAI_HEADERS
    ) as r:
        for line in r.iter_lines():
            if line.startswith("event: "):
                stamps.setdefault(line[7:], []).append(time.monotonic() - t0)
    deltas = stamps["response.output_text.delta"]
    assert stamps["response.created"][0] < deltas[0] - 0.05  # the stream opens at once; the wait is for the first token
    assert deltas[0] >= 0.1 and deltas[2] - deltas[0] >= 0.09


def test_responses_auth_validation_and_log(fu: FakeUpstreamThread) -> None:
    r = httpx.post(fu.url + "/v1/responses", json={"model": "m", "input": "x"})
    assert r.status_code == 401 and r.json()["error"]["type"] == "invalid_request_error"
    assert _responses(fu, {"input": "x"}).status_code == 400
    r = _responses(fu, {"model": "m", "input": 5})
    assert r.status_code == 400 and "input" in r.json()["error"]["message"]
    httpx.post(fu.url + "/_fake/script", json={"model": "ctl", "reply": "over http"})
    headers = {**OAI_HEADERS, "OpenAI-Organization": "org-1", "x-trace": "abc"}
    body = {"model": "ctl", "input": [{"role": "user", "content": "hi"}], "temperature": 0.2, "store": False}
    out = _post(fu, "/v1/responses", body, headers=headers).json()
    assert out["output"][0]["content"][0]["text"] == "over http" and out["temperature"] == 0.2
    rec = fu.calls("ctl")[-1]
    assert rec["body"] == body and rec["path"] == "/v1/responses" and rec["stream"] is False
    assert rec["headers"]["openai-organization"] == "org-1" and rec["headers"]["x-trace"] == "abc"
    assert rec["headers"]["authorization"] == "Bearer sk-test-123" and rec["completed"] is True


# ---------------------------------------------------------------------------------------------- /v1/embeddings


def test_embeddings_float_and_base64_with_the_sdk(fu: FakeUpstreamThread, client: openai.OpenAI) -> None:
    floats = client.embeddings.create(model="emb", input=["the cat", "a dog sat"], encoding_format="float")
    assert floats.object == "list" and floats.model == "emb" and [d.index for d in floats.data] == [0, 1]
    vecs = [d.embedding for d in floats.data]
    assert all(len(v) == 8 for v in vecs) and vecs[0] != vecs[1]
    assert all(abs(math.sqrt(sum(x * x for x in v)) - 1.0) < 1e-6 for v in vecs)
    assert vecs[0] == list(vector("the cat"))
    assert (floats.usage.prompt_tokens, floats.usage.total_tokens) == (5, 5)
    b64 = client.embeddings.create(model="emb", input=["the cat", "a dog sat"], encoding_format="base64")
    raw = base64.b64decode(b64.data[0].embedding)  # type: ignore[arg-type]  # the SDK hands base64 back as is
    assert list(struct.unpack("<8f", raw)) == vecs[0]
    default = client.embeddings.create(model="emb", input="the cat")  # the SDK asks for base64 and decodes it
    assert fu.calls("emb")[-1]["body"]["encoding_format"] == "base64"
    assert default.data[0].embedding == vecs[0]
    again = client.embeddings.create(model="other-model", input="the cat", encoding_format="float")
    assert again.data[0].embedding == vecs[0]  # deterministic per input text


def test_embeddings_dimensions_and_token_inputs(fu: FakeUpstreamThread) -> None:
    out = _post(fu, "/v1/embeddings", {"model": "e", "input": "hello world", "dimensions": 20}).json()
    CreateEmbeddingResponse.model_validate(out)
    v20 = out["data"][0]["embedding"]
    assert len(v20) == 20 and abs(sum(x * x for x in v20) - 1.0) < 1e-5
    v3 = _post(fu, "/v1/embeddings", {"model": "e", "input": "hello world", "dimensions": 3}).json()
    scale = v20[0] / v3["data"][0]["embedding"][0]  # a shorter vector is a rescaled prefix of a longer one
    assert all(abs(a * scale - b) < 1e-5 for a, b in zip(v3["data"][0]["embedding"], v20[:3], strict=True))
    ids = _post(fu, "/v1/embeddings", {"model": "e", "input": [1, 2, 3]}).json()
    assert len(ids["data"]) == 1 and ids["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
    many = _post(fu, "/v1/embeddings", {"model": "e", "input": [[1, 2, 3], [4]]}).json()
    assert [d["index"] for d in many["data"]] == [0, 1] and many["usage"]["prompt_tokens"] == 4
    assert many["data"][0]["embedding"] == ids["data"][0]["embedding"] != many["data"][1]["embedding"]
    b64 = _post(
        fu, "/v1/embeddings", {"model": "e", "input": "hello world", "dimensions": 20, "encoding_format": "base64"}
    ).json()
    assert list(struct.unpack("<20f", base64.b64decode(b64["data"][0]["embedding"]))) == v20


def test_embeddings_scripted_usage_latency_and_log(fu: FakeUpstreamThread) -> None:
    fu.script("eu", {"usage": {"prompt_tokens": 7, "total_tokens": 7}, "latency_ms": 100})
    t0 = time.monotonic()
    out = _post(
        fu,
        "/v1/embeddings",
        {"model": "eu", "input": ["a", "b"], "user": "u-1"},
        headers={**OAI_HEADERS, "x-trace": "t"},
    ).json()
    assert time.monotonic() - t0 >= 0.1
    assert out["usage"] == {"prompt_tokens": 7, "total_tokens": 7} and len(out["data"]) == 2
    rec = fu.calls("eu")[-1]
    assert rec["path"] == "/v1/embeddings" and rec["body"] == {"model": "eu", "input": ["a", "b"], "user": "u-1"}
    assert rec["headers"]["x-trace"] == "t" and rec["completed"] is True and rec["stream"] is False
    fu.script("eo", {"omit_usage": True})
    assert "usage" not in _post(fu, "/v1/embeddings", {"model": "eo", "input": "a"}).json()


def test_embeddings_faults(fu: FakeUpstreamThread, client: openai.OpenAI) -> None:
    fu.script("ef", {"fault": "429", "retry_after": "3", "error_message": "slow down", "fault_times": 1})
    r = _post(fu, "/v1/embeddings", {"model": "ef", "input": "a"})
    assert r.status_code == 429 and r.headers["retry-after"] == "3"
    assert r.json()["error"] == {
        "message": "slow down",
        "type": "requests",
        "param": None,
        "code": "rate_limit_exceeded",
    }
    assert client.embeddings.create(model="ef", input="a").data
    fu.script("ef", {"fault": "503"})
    with pytest.raises(openai.InternalServerError) as exc:
        client.embeddings.create(model="ef", input="a")
    assert exc.value.status_code == 503
    fu.script("ef", {"fault": "drop"})
    with pytest.raises(httpx.RemoteProtocolError):
        _post(fu, "/v1/embeddings", {"model": "ef", "input": "a"})
    assert fu.calls("ef")[-1]["completed"] is False
    fu.script("ef", {"fault": "malformed"})
    r = _post(fu, "/v1/embeddings", {"model": "ef", "input": "a", "stream": True})
    assert r.status_code == 200
    with pytest.raises(ValueError):
        r.json()
    fu.script("ef", {"fault": "timeout", "hang_s": 0.15})
    t0 = time.monotonic()
    assert _post(fu, "/v1/embeddings", {"model": "ef", "input": "a"}).status_code == 200
    assert time.monotonic() - t0 >= 0.15


@pytest.mark.parametrize(
    ("body", "word"),
    [
        ({"input": "a"}, "model"),
        ({"model": "e"}, "input"),
        ({"model": "e", "input": ""}, "input"),
        ({"model": "e", "input": []}, "input"),
        ({"model": "e", "input": ["a", 1]}, "input"),
        ({"model": "e", "input": [[1, 2], []]}, "input"),
        ({"model": "e", "input": [True]}, "input"),
        ({"model": "e", "input": "a", "encoding_format": "int8"}, "encoding_format"),
        ({"model": "e", "input": "a", "dimensions": 0}, "dimensions"),
        ({"model": "e", "input": "a", "dimensions": "8"}, "dimensions"),
    ],
)
def test_embeddings_rejects_bad_requests(fu: FakeUpstreamThread, body: dict[str, Any], word: str) -> None:
    r = _post(fu, "/v1/embeddings", body)
    assert r.status_code == 400 and word in r.json()["error"]["message"]


def test_embeddings_requires_a_key(fu: FakeUpstreamThread) -> None:
    r = httpx.post(fu.url + "/v1/embeddings", json={"model": "e", "input": "a"})
    assert r.status_code == 401 and r.json()["error"]["type"] == "invalid_request_error"
