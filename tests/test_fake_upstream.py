"""Tests for the fake upstream provider (gateway.fake_upstream)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from gateway.fake_upstream import Behaviour, FakeUpstream, FakeUpstreamThread

OAI_HEADERS = {"authorization": "Bearer sk-test-123"}
ANT_HEADERS = {"x-api-key": "sk-ant-test-456", "anthropic-version": "2023-06-01"}
MSGS = [{"role": "user", "content": "hello there world"}]


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


def _chat(fu: FakeUpstreamThread, body: dict[str, Any], **kw: Any) -> httpx.Response:
    return httpx.post(fu.url + "/v1/chat/completions", json=body, headers=OAI_HEADERS, **kw)


def _sse_data(text: str) -> list[str]:
    return [line[6:] for line in text.split("\n") if line.startswith("data: ")]


def _anthropic_events(text: str) -> list[tuple[str, str]]:
    out = []
    for frame in text.strip().split("\n\n"):
        lines = frame.split("\n")
        assert lines[0].startswith("event: ") and lines[1].startswith("data: "), frame
        out.append((lines[0][7:], lines[1][6:]))
    return out


def _wait_for(pred: Any, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_openai_non_stream_default(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model="gpt-x", messages=MSGS)  # type: ignore[arg-type]
    assert r.choices[0].message.content == "This is a simulated reply from gpt-x."
    assert r.choices[0].finish_reason == "stop"
    assert r.id.startswith("chatcmpl-fake-") and r.model == "gpt-x" and r.system_fingerprint == "fp_fake"
    assert r.usage is not None
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (7, 7, 14)
    assert r.usage.prompt_tokens_details and r.usage.prompt_tokens_details.cached_tokens == 0


def test_openai_stream_include_usage(fu: FakeUpstreamThread, client: openai.OpenAI) -> None:
    fu.script("m", {"output_tokens": 5})
    stream = client.chat.completions.create(
        model="m",
        messages=MSGS,  # type: ignore[arg-type]
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "tok0 tok1 tok2 tok3 tok4"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 5 and chunks[-1].usage.prompt_tokens == 7
    assert all(c.usage is None for c in chunks[:-1])
    # raw wire: one word per chunk, "usage": null on every chunk, [DONE] terminator
    raw = _sse_data(
        _chat(fu, {"model": "m", "messages": MSGS, "stream": True, "stream_options": {"include_usage": True}}).text
    )
    assert raw[-1] == "[DONE]"
    objs = [json.loads(d) for d in raw[:-1]]
    assert all("usage" in o for o in objs) and all(o["usage"] is None for o in objs[:-1])
    assert [o["choices"][0]["delta"].get("content") for o in objs[1:6]] == [
        "tok0",
        " tok1",
        " tok2",
        " tok3",
        " tok4",
    ]
    assert fu.calls("m")[-1]["completed"] is True


def test_openai_stream_without_include_usage(fu: FakeUpstreamThread) -> None:
    raw = _sse_data(_chat(fu, {"model": "m", "messages": MSGS, "stream": True}).text)
    objs = [json.loads(d) for d in raw[:-1]]
    assert all("usage" not in o for o in objs) and all(o["choices"] for o in objs)


def test_scripted_usage_verbatim(fu: FakeUpstreamThread, client: openai.OpenAI) -> None:
    usage = {
        "prompt_tokens": 1000,
        "completion_tokens": 3,
        "total_tokens": 1003,
        "prompt_tokens_details": {"cached_tokens": 800},
        "completion_tokens_details": {"reasoning_tokens": 2},
    }
    fu.script("u", {"reply": "a b c", "usage": usage})
    assert _chat(fu, {"model": "u", "messages": MSGS}).json()["usage"] == usage
    body = {"model": "u", "messages": MSGS, "stream": True, "stream_options": {"include_usage": True}}
    assert json.loads(_sse_data(_chat(fu, body).text)[-2])["usage"] == usage
    fu.script("o", {"omit_usage": True})
    assert "usage" not in _chat(fu, {"model": "o", "messages": MSGS}).json()
    raw = _sse_data(_chat(fu, {**body, "model": "o"}).text)
    assert all(json.loads(d)["choices"] for d in raw[:-1])


def test_429_with_retry_after_then_recovers(fu: FakeUpstreamThread, client: openai.OpenAI) -> None:
    fu.script("rl", {"fault": "429", "retry_after": "7", "fault_times": 1})
    r = _chat(fu, {"model": "rl", "messages": MSGS})
    assert r.status_code == 429 and r.headers["retry-after"] == "7"
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["param"] is None
    assert _chat(fu, {"model": "rl", "messages": MSGS}).status_code == 200
    fu.script("rl2", {"fault": "503", "error_message": "boom"})
    with pytest.raises(openai.InternalServerError) as exc:
        client.chat.completions.create(model="rl2", messages=MSGS)  # type: ignore[arg-type]
    assert exc.value.status_code == 503 and "boom" in str(exc.value)


def test_401_fault_echoes_credential(fu: FakeUpstreamThread) -> None:
    fu.script("k", {"fault": "401"})
    r = _chat(fu, {"model": "k", "messages": MSGS})
    assert r.status_code == 401 and "sk-test-123" in r.json()["error"]["message"]
    body = {"model": "k", "max_tokens": 5, "messages": MSGS}
    r = httpx.post(fu.url + "/v1/messages", json=body, headers=ANT_HEADERS)
    assert r.status_code == 401
    assert r.json()["type"] == "error" and r.json()["error"]["type"] == "authentication_error"
    assert "sk-ant-test-456" in r.json()["error"]["message"]


def test_auth_and_validation(fu: FakeUpstreamThread) -> None:
    r = httpx.post(fu.url + "/v1/chat/completions", json={"model": "m", "messages": MSGS})
    assert r.status_code == 401 and r.json()["error"]["type"] == "invalid_request_error"
    url = fu.url + "/v1/messages"
    body = {"model": "a", "max_tokens": 5, "messages": MSGS}
    assert httpx.post(url, json=body, headers={"anthropic-version": "2023-06-01"}).status_code == 401
    assert httpx.post(url, json=body, headers={"x-api-key": "k"}).status_code == 400
    r = httpx.post(url, json={"model": "a", "messages": MSGS}, headers=ANT_HEADERS)
    assert r.status_code == 400 and "max_tokens" in r.json()["error"]["message"]


def test_drop_mid_stream(fu: FakeUpstreamThread) -> None:
    fu.script("d", {"fault": "drop", "drop_after": 2})
    lines: list[str] = []
    with pytest.raises(httpx.RemoteProtocolError):
        with httpx.stream(
            "POST",
            fu.url + "/v1/chat/completions",
            json={"model": "d", "messages": MSGS, "stream": True},
            headers=OAI_HEADERS,
        ) as r:
            lines.extend(r.iter_lines())
    rec = fu.calls("d")[-1]
    assert rec["stream"] is True and rec["completed"] is False and rec["chunks_sent"] == 3
    assert "data: [DONE]" not in lines
    with pytest.raises(httpx.RemoteProtocolError):
        _chat(fu, {"model": "d", "messages": MSGS})
    assert fu.calls("d")[-1]["completed"] is False


def test_client_disconnect_leaves_completed_false(fu: FakeUpstreamThread) -> None:
    fu.script("slow", {"output_tokens": 100, "itl_ms": 20})
    body = {"model": "slow", "messages": MSGS, "stream": True}
    with httpx.stream("POST", fu.url + "/v1/chat/completions", json=body, headers=OAI_HEADERS) as r:
        for i, _ in enumerate(r.iter_lines()):
            if i >= 4:
                break
    deadline = time.monotonic() + 5  # the server notices the client left when its next write fails
    while not fu.calls("slow")[-1]["ended"]:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    rec = fu.calls("slow")[-1]
    assert rec["completed"] is False and 0 < rec["chunks_sent"] < 100


def test_malformed_and_error_event(fu: FakeUpstreamThread) -> None:
    fu.script("bad", {"fault": "malformed"})
    r = _chat(fu, {"model": "bad", "messages": MSGS})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    with pytest.raises(ValueError):
        r.json()
    raw = _sse_data(_chat(fu, {"model": "bad", "messages": MSGS, "stream": True}).text)
    assert json.loads(raw[0])["choices"][0]["delta"]["content"] == "This"
    assert raw[1:] == ["{broken", "[DONE]"]
    fu.script("ev", {"fault": "error_event", "drop_after": 1})
    raw = _sse_data(_chat(fu, {"model": "ev", "messages": MSGS, "stream": True}).text)
    assert json.loads(raw[-1]) == {"error": {"message": "upstream exploded", "type": "server_error"}}
    assert len(raw) == 3 and "[DONE]" not in raw
    body = {"model": "ev", "max_tokens": 5, "messages": MSGS, "stream": True}
    events = _anthropic_events(httpx.post(fu.url + "/v1/messages", json=body, headers=ANT_HEADERS).text)
    assert [e for e, _ in events].count("content_block_delta") == 1
    assert events[-1][0] == "error" and json.loads(events[-1][1])["error"]["type"] == "overloaded_error"


def test_anthropic_stream_event_sequence(fu: FakeUpstreamThread) -> None:
    usage = {
        "input_tokens": 50,
        "output_tokens": 3,
        "cache_read_input_tokens": 40,
        "cache_creation_input_tokens": 10,
        "cache_creation": {"ephemeral_5m_input_tokens": 10, "ephemeral_1h_input_tokens": 0},
    }
    fu.script("claude", {"reply": "one two three", "usage": usage, "finish_reason": "length"})
    body = {"model": "claude", "max_tokens": 5, "messages": MSGS, "system": "be nice", "stream": True}
    r = httpx.post(fu.url + "/v1/messages", json=body, headers=ANT_HEADERS)
    assert r.headers["content-type"].startswith("text/event-stream")
    events = _anthropic_events(r.text)
    assert [e for e, _ in events] == [
        "message_start", "content_block_start", "ping",
        "content_block_delta", "content_block_delta", "content_block_delta",
        "content_block_stop", "message_delta", "message_stop",
    ]  # fmt: skip
    data = [json.loads(d) for _, d in events]
    assert all(d["type"] == e for (e, _), d in zip(events, data, strict=True))
    assert data[0]["message"]["usage"] == {**usage, "output_tokens": 1}
    assert "".join(d["delta"]["text"] for d in data[3:6]) == "one two three"
    assert data[7]["delta"] == {"stop_reason": "max_tokens", "stop_sequence": None}
    assert data[7]["usage"] == {"output_tokens": 3}
    assert fu.calls("claude")[-1]["completed"] is True


def test_anthropic_non_stream_and_tool_use(fu: FakeUpstreamThread) -> None:
    body = {"model": "c", "max_tokens": 5, "system": "sys prompt", "messages": MSGS}
    out = httpx.post(fu.url + "/v1/messages", json=body, headers=ANT_HEADERS).json()
    assert out["id"].startswith("msg_fake_") and out["type"] == "message" and out["stop_reason"] == "end_turn"
    assert out["content"] == [{"type": "text", "text": "This is a simulated reply from c."}]
    assert out["usage"] == {
        "input_tokens": 9, "output_tokens": 7, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0,
    }  # fmt: skip
    fu.script("c", {"tool_calls": [{"name": "get_weather", "arguments": '{"city": "Paris", "unit": "celsius"}'}]})
    out = httpx.post(fu.url + "/v1/messages", json=body, headers=ANT_HEADERS).json()
    assert out["stop_reason"] == "tool_use"
    assert out["content"] == [
        {
            "type": "tool_use",
            "id": "toolu_fake_0",
            "name": "get_weather",
            "input": {"city": "Paris", "unit": "celsius"},
        }
    ]
    events = _anthropic_events(
        httpx.post(fu.url + "/v1/messages", json={**body, "stream": True}, headers=ANT_HEADERS).text
    )
    data = [json.loads(d) for _, d in events]
    start = next(d for d in data if d["type"] == "content_block_start")
    assert start["content_block"] == {
        "type": "tool_use",
        "id": "toolu_fake_0",
        "name": "get_weather",
        "input": {},
    }
    partial = "".join(d["delta"]["partial_json"] for d in data if d["type"] == "content_block_delta")
    assert json.loads(partial) == {"city": "Paris", "unit": "celsius"}


def test_openai_tool_calls(fu: FakeUpstreamThread, client: openai.OpenAI) -> None:
    fu.script("t", {"reply": "calling", "tool_calls": [{"name": "f", "arguments": '{"x": 1, "y": [1, 2, 3]}'}]})
    r = client.chat.completions.create(model="t", messages=MSGS)  # type: ignore[arg-type]
    msg = r.choices[0].message
    assert r.choices[0].finish_reason == "tool_calls" and msg.content == "calling"
    assert msg.tool_calls and msg.tool_calls[0].id == "call_0"
    assert msg.tool_calls[0].function.name == "f"  # type: ignore[union-attr]
    args = ""
    for chunk in client.chat.completions.create(model="t", messages=MSGS, stream=True):  # type: ignore[arg-type]
        for tc in chunk.choices[0].delta.tool_calls or []:
            args += (tc.function.arguments or "") if tc.function else ""
    assert json.loads(args) == {"x": 1, "y": [1, 2, 3]}


def test_latency_ttft_and_timeout(fu: FakeUpstreamThread) -> None:
    fu.script("lat", {"latency_ms": 150})
    t0 = time.monotonic()
    assert _chat(fu, {"model": "lat", "messages": MSGS}).status_code == 200
    assert time.monotonic() - t0 >= 0.15
    fu.script("ttft", {"ttft_ms": 150, "reply": "x y"})
    t0 = time.monotonic()
    with httpx.stream(
        "POST",
        fu.url + "/v1/chat/completions",
        json={"model": "ttft", "messages": MSGS, "stream": True},
        headers=OAI_HEADERS,
    ) as r:
        t_headers = time.monotonic()
        assert r.status_code == 200
        r.read()
    # The wait happens after the headers were sent (most of it: the headers take a moment to arrive).
    assert time.monotonic() - t0 >= 0.15 and time.monotonic() - t_headers >= 0.1
    fu.script("hang", {"fault": "timeout", "hang_s": 0.2})
    t0 = time.monotonic()
    assert _chat(fu, {"model": "hang", "messages": MSGS}).status_code == 200
    assert time.monotonic() - t0 >= 0.2


def test_call_log(fu: FakeUpstreamThread) -> None:
    _chat(fu, {"model": "a", "messages": MSGS, "temperature": 0})
    httpx.post(fu.url + "/v1/messages", json={"model": "b", "max_tokens": 3, "messages": MSGS}, headers=ANT_HEADERS)
    recs = fu.calls()
    assert [r["model"] for r in recs] == ["a", "b"]
    a = fu.calls("a")[0]
    assert a["path"] == "/v1/chat/completions" and a["body"]["temperature"] == 0
    assert a["headers"]["authorization"] == "Bearer sk-test-123"
    assert a["stream"] is False and a["completed"] is True and a["chunks_sent"] == 0
    assert fu.calls("b")[0]["headers"]["x-api-key"] == "sk-ant-test-456"
    http = httpx.get(fu.url + "/_fake/calls", params={"model": "b"}).json()["data"]
    assert len(http) == 1 and http[0]["path"] == "/v1/messages"
    fu.reset()
    assert fu.calls() == []


def test_control_endpoints(fu: FakeUpstreamThread) -> None:
    r = httpx.post(fu.url + "/_fake/script", json={"model": "ctl", "reply": "scripted over http"})
    assert r.status_code == 200 and r.json() == {"ok": True}
    assert _chat(fu, {"model": "ctl", "messages": MSGS}).json()["choices"][0]["message"]["content"] == (
        "scripted over http"
    )
    r = httpx.post(fu.url + "/_fake/script", json={"model": "ctl", "bogus": 1})
    assert r.status_code == 400 and "bogus" in r.text
    models = httpx.get(fu.url + "/v1/models").json()
    assert models["object"] == "list" and [m["id"] for m in models["data"]] == ["ctl"]
    assert httpx.post(fu.url + "/_fake/reset").json() == {"ok": True}
    assert httpx.get(fu.url + "/v1/models").json()["data"] == []
    assert httpx.get(fu.url + "/_fake/calls").json() == {"data": []}


def test_behaviour_parsing() -> None:
    with pytest.raises(ValueError, match="nope"):
        Behaviour.from_dict({"nope": 1})
    with pytest.raises(ValueError):
        Behaviour.from_dict({"fault": "explode"})
    b = Behaviour.from_dict({"output_tokens": 3, "latency_ms": 5, "fault": "429", "fault_times": 2})
    assert b.latency_ms == 5.0 and b.fault_times == 2
    assert b.plan("m").text == "tok0 tok1 tok2" and b.plan("m").pieces == ["tok0", " tok1", " tok2"]


def test_async_api() -> None:
    async def main() -> None:
        up = FakeUpstream()
        await up.start()
        try:
            assert up.url.startswith("http://127.0.0.1:") and not up.url.endswith(":0")
            up.script("z", Behaviour(reply="zed"))
            async with httpx.AsyncClient() as c:
                r = await c.post(
                    up.url + "/v1/chat/completions", json={"model": "z", "messages": []}, headers=OAI_HEADERS
                )
            assert r.json()["choices"][0]["message"]["content"] == "zed"
            assert len(up.calls("z")) == 1
        finally:
            await up.stop()

    asyncio.run(main())


def test_cli(tmp_path: Path) -> None:
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"cli-model": {"reply": "from the cli"}}))
    cmd = [sys.executable, "-m", "gateway.fake_upstream", "--host", "127.0.0.1", "--port", "0"]
    repo = Path(__file__).resolve().parents[1]
    with subprocess.Popen([*cmd, "--script", str(script)], cwd=repo, stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline().strip()
            assert line.startswith("fake upstream listening on http://127.0.0.1:")
            url = line.rsplit(" ", 1)[1]
            body = {"model": "cli-model", "messages": []}
            r = httpx.post(url + "/v1/chat/completions", json=body, headers=OAI_HEADERS)
            assert r.json()["choices"][0]["message"]["content"] == "from the cli"
        finally:
            proc.terminate()
            assert proc.wait(timeout=10) == 0


def test_anthropic_faults(fu: FakeUpstreamThread) -> None:
    url = fu.url + "/v1/messages"
    body = {"model": "af", "max_tokens": 5, "messages": MSGS}
    fu.script("af", {"fault": "429", "retry_after": "3", "error_message": "slow down"})
    r = httpx.post(url, json=body, headers=ANT_HEADERS)
    assert r.status_code == 429 and r.headers["retry-after"] == "3"
    assert r.json() == {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}
    fu.script("af", {"fault": "drop", "drop_after": 1})
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.post(url, json={**body, "stream": True}, headers=ANT_HEADERS)
    rec = fu.calls("af")[-1]
    assert rec["completed"] is False and rec["chunks_sent"] == 4  # message_start, block_start, ping, 1 delta
    fu.script("af", {"omit_usage": True, "reply": "hi"})
    assert "usage" not in httpx.post(url, json=body, headers=ANT_HEADERS).json()
    events = _anthropic_events(httpx.post(url, json={**body, "stream": True}, headers=ANT_HEADERS).text)
    data = {e: json.loads(d) for e, d in events}
    assert "usage" not in data["message_start"]["message"] and "usage" not in data["message_delta"]
