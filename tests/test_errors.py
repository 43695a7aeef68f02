"""Every applicable row of PRODUCT.md section 4, through the official openai client."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest
from conftest import ANTHROPIC_KEY, UPSTREAM_KEY, Gateway

from gateway.fake_upstream import FakeUpstreamThread

HI: Any = [{"role": "user", "content": "hi"}]


def _error(exc: openai.APIStatusError) -> dict[str, Any]:
    body = exc.body
    assert isinstance(body, dict) and set(body) == {"message", "type", "param", "code"}
    return body


def test_bad_json_is_400(gateway: Gateway) -> None:
    r = httpx.post(f"{gateway.url}/v1/chat/completions", content=b"{nope", headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert r.json()["error"]["type"] == "invalid_request_error"
    assert r.json()["error"]["message"].startswith("request body is not valid JSON")
    assert r.headers["x-request-id"]


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user"}]}, "messages[0].content"),
        ({"messages": HI, "max_tokens": 0}, "max_tokens"),
        ({"messages": HI, "temperature": 3}, "temperature"),
        ({"messages": HI, "tools": [{"type": "function", "function": {}}]}, "tools[0].function.name"),
    ],
)
def test_invalid_fields_are_400_naming_the_field(gateway: Gateway, kwargs: dict[str, Any], param: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        gateway.client().chat.completions.create(model="gpt-test", **kwargs)
    assert info.value.status_code == 400
    assert _error(info.value)["param"] == param


def test_missing_model_is_400(gateway: Gateway) -> None:
    r = httpx.post(f"{gateway.url}/v1/chat/completions", json={"messages": HI})
    assert r.status_code == 400 and r.json()["error"]["param"] == "model"


def test_unknown_model_is_404(gateway: Gateway) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        gateway.client().chat.completions.create(model="no-such-model", messages=HI)
    assert _error(info.value)["code"] == "model_not_found"
    assert gateway.metric("gateway_requests_total", model="none", status="404") >= 1


def test_unknown_route_is_openai_shaped_404(gateway: Gateway) -> None:
    r = httpx.get(f"{gateway.url}/v1/nothing-here")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_model_without_key_is_503(gateway: Gateway) -> None:
    with pytest.raises(openai.InternalServerError) as info:
        gateway.client().chat.completions.create(model="nokey-test", messages=HI)
    assert info.value.status_code == 503
    assert _error(info.value)["code"] == "service_unavailable"


def test_body_over_limit_is_413(gateway: Gateway, upstream: FakeUpstreamThread) -> None:
    with pytest.raises(openai.APIStatusError) as info:
        gateway.client().chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "x" * 70000}])
    assert info.value.status_code == 413
    assert _error(info.value)["code"] == "request_too_large"

    def chunked() -> Any:  # no content-length: the limit still holds while reading
        for _ in range(20):
            yield b"x" * 4096

    r = httpx.post(f"{gateway.url}/v1/chat/completions", content=chunked())
    assert r.status_code == 413
    assert upstream.calls() == []


@pytest.mark.parametrize(("fault", "kind"), [("500", "server_error"), ("503", "server_error"),
                                             ("drop", "connection"), ("malformed", "bad_response")])
def test_upstream_failures_are_502(gateway: Gateway, upstream: FakeUpstreamThread, fault: str, kind: str) -> None:
    upstream.script("gpt-4o-test", {"fault": fault})
    before = gateway.metric("gateway_upstream_errors_total", model="gpt-test", kind=kind)
    with pytest.raises(openai.InternalServerError) as info:
        gateway.client().chat.completions.create(model="gpt-test", messages=HI)
    assert info.value.status_code == 502
    assert _error(info.value)["code"] == "upstream_error"
    assert gateway.metric("gateway_upstream_errors_total", model="gpt-test", kind=kind) - before == 1


def test_unreachable_upstream_is_502(gateway: Gateway) -> None:
    with pytest.raises(openai.InternalServerError) as info:
        gateway.client().chat.completions.create(model="down-test", messages=HI)
    assert info.value.status_code == 502
    assert "cannot reach upstream" in _error(info.value)["message"]


def test_upstream_timeout_is_504(gateway: Gateway, upstream: FakeUpstreamThread) -> None:
    upstream.script("slow-up", {"fault": "timeout", "hang_s": 5})
    with pytest.raises(openai.InternalServerError) as info:
        gateway.client().chat.completions.create(model="slow-test", messages=HI)
    assert info.value.status_code == 504
    assert _error(info.value)["code"] == "upstream_timeout"
    assert gateway.metric("gateway_upstream_errors_total", model="slow-test", kind="timeout") >= 1


def test_upstream_rate_limit_is_429_with_retry_after(gateway: Gateway, upstream: FakeUpstreamThread) -> None:
    upstream.script("claude-up", {"fault": "429", "retry_after": "7"})
    with pytest.raises(openai.RateLimitError) as info:
        gateway.client().chat.completions.create(model="claude-test", messages=HI)
    assert info.value.response.headers["retry-after"] == "7"
    assert _error(info.value)["type"] == "rate_limit_exceeded"


def test_upstream_400_stays_400(gateway: Gateway, upstream: FakeUpstreamThread) -> None:
    upstream.script("gpt-4o-test", {"fault": "400", "error_message": "context too long"})
    with pytest.raises(openai.BadRequestError) as info:
        gateway.client().chat.completions.create(model="gpt-test", messages=HI)
    assert "context too long" in _error(info.value)["message"]


@pytest.mark.parametrize(("model", "upstream_model", "key"),
                         [("gpt-test", "gpt-4o-test", UPSTREAM_KEY), ("claude-test", "claude-up", ANTHROPIC_KEY)])
def test_upstream_key_never_leaks(
    gateway: Gateway, upstream: FakeUpstreamThread, model: str, upstream_model: str, key: str
) -> None:
    upstream.script(upstream_model, {"fault": "401"})
    with pytest.raises(openai.InternalServerError) as info:
        gateway.client().chat.completions.create(model=model, messages=HI)
    assert info.value.status_code == 502
    assert "credentials were rejected" in _error(info.value)["message"]
    assert key not in info.value.response.text
    upstream.script(upstream_model, {"fault": "400", "error_message": f"bad key {key} here"})
    with pytest.raises(openai.BadRequestError) as info2:
        gateway.client().chat.completions.create(model=model, messages=HI)
    assert key not in info2.value.response.text and "[redacted]" in info2.value.response.text
    logs = gateway.logs()
    assert "upstream" in logs and key not in logs and key[:12] not in logs


@pytest.mark.parametrize("fault", ["drop", "error_event", "malformed"])
@pytest.mark.parametrize(("model", "upstream_model"), [("gpt-test", "gpt-4o-test"), ("claude-test", "claude-up")])
def test_failure_mid_stream_is_one_error_event_then_end(
    gateway: Gateway, upstream: FakeUpstreamThread, fault: str, model: str, upstream_model: str
) -> None:
    upstream.script(upstream_model, {"output_tokens": 20, "fault": fault, "drop_after": 3})
    before = gateway.metric("gateway_usage_estimated_total", model=model, reason="error")
    received: list[str] = []
    with pytest.raises(openai.APIError) as info:
        for chunk in gateway.client().chat.completions.create(model=model, messages=HI, stream=True):
            if chunk.choices and chunk.choices[0].delta.content:
                received.append(chunk.choices[0].delta.content)
    assert "upstream" in info.value.message
    assert received  # the stream had started
    assert gateway.metric("gateway_usage_estimated_total", model=model, reason="error") - before == 1

    with httpx.stream("POST", f"{gateway.url}/v1/chat/completions",
                      json={"model": model, "messages": HI, "stream": True}) as r:
        events = [line for line in r.iter_lines() if line.startswith("data:")]
    assert r.status_code == 200
    assert events[-1].startswith('data: {"error":') and "[DONE]" not in "".join(events)
    assert sum(1 for e in events if '"error"' in e) == 1


def test_refusal_before_stream_start_is_a_plain_error(gateway: Gateway, upstream: FakeUpstreamThread) -> None:
    upstream.script("gpt-4o-test", {"fault": "500"})
    with pytest.raises(openai.InternalServerError) as info:
        list(gateway.client().chat.completions.create(model="gpt-test", messages=HI, stream=True))
    assert info.value.status_code == 502
