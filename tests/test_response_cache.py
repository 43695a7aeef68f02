"""The exact response cache, through the openai client against the fake upstream."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from conftest import Gateway, model

from gateway.cache.response_key import IGNORED_FIELDS, KEY_FIELDS
from gateway.fake_upstream import FakeUpstreamThread

HI: Any = [{"role": "user", "content": "hello cache"}]
USAGE = {"prompt_tokens": 1000, "completion_tokens": 100, "total_tokens": 1100}
COST = 0.0035  # 1000 x $2.50/M + 100 x $10/M


def cache_config(upstream: FakeUpstreamThread, **extra: Any) -> dict[str, Any]:
    return {
        "models": [model("cached", "openai", upstream, upstream_model="rc-up",
                         pricing={"input_per_mtok": 2.5, "output_per_mtok": 10})],
        "cache": {"response": {"enabled": True, "ttl_s": 2}},
        **extra,
    }


@pytest.fixture(scope="module")
def cache_gw(upstream: FakeUpstreamThread) -> Iterator[Gateway]:
    gw = Gateway(cache_config(upstream))
    yield gw
    gw.stop()


def ask(gw: Gateway, content: str, header: str | None = None, **kwargs: Any) -> Any:
    kwargs.setdefault("temperature", 0)
    extra = {"x-gateway-cache": header} if header else None
    return gw.client().chat.completions.with_raw_response.create(
        model="cached", messages=[{"role": "user", "content": content}], extra_headers=extra, **kwargs)


def test_every_openai_request_field_is_classified() -> None:
    from openai.types.chat import completion_create_params

    fields = set(completion_create_params.CompletionCreateParamsBase.__annotations__) | {"stream"}
    assert fields - KEY_FIELDS - set(IGNORED_FIELDS) == set()
    assert KEY_FIELDS.isdisjoint(IGNORED_FIELDS)


def test_identical_deterministic_request_is_a_free_hit(cache_gw: Gateway, upstream: FakeUpstreamThread) -> None:
    upstream.script("rc-up", {"reply": "cached answer", "usage": USAGE})
    content = f"q-{uuid.uuid4()}"
    saved_before = cache_gw.metric("gateway_cache_saved_usd_total", cache="response")
    first = ask(cache_gw, content)
    assert first.headers["x-gateway-cache"] == "miss" and first.headers["x-gateway-cost-usd"] == "0.0035"
    second = ask(cache_gw, content)
    assert second.headers["x-gateway-cache"] == "hit" and second.headers["x-gateway-cost-usd"] == "0"
    body = second.parse()
    assert body.choices[0].message.content == "cached answer"
    assert body.usage.model_dump()["cost"] == 0
    assert len(upstream.calls("rc-up")) == 1
    assert round(cache_gw.metric("gateway_cache_saved_usd_total", cache="response") - saved_before, 12) == COST
    assert ask(cache_gw, content, max_tokens=5).headers["x-gateway-cache"] == "miss"  # another parameter
    assert ask(cache_gw, content, user="someone-else").headers["x-gateway-cache"] == "hit"  # ignored field
    other_tenant = cache_gw.client(api_key="another-callers-key").chat.completions.with_raw_response.create(
        model="cached", messages=[{"role": "user", "content": content}], temperature=0)
    assert other_tenant.headers["x-gateway-cache"] == "miss"  # tenants never see each other's entries


def test_only_deterministic_requests_unless_forced(cache_gw: Gateway, upstream: FakeUpstreamThread) -> None:
    content = f"q-{uuid.uuid4()}"
    for _ in range(2):
        assert ask(cache_gw, content, temperature=1).headers["x-gateway-cache"] == "bypass"
    assert len(upstream.calls("rc-up")) == 2
    assert ask(cache_gw, content, "force", temperature=1).headers["x-gateway-cache"] == "miss"
    assert ask(cache_gw, content, "force", temperature=1).headers["x-gateway-cache"] == "hit"
    seeded = f"q-{uuid.uuid4()}"
    ask(cache_gw, seeded, temperature=1, seed=7)
    assert ask(cache_gw, seeded, temperature=1, seed=7).headers["x-gateway-cache"] == "hit"


def test_no_store_and_no_cache(cache_gw: Gateway, upstream: FakeUpstreamThread) -> None:
    content = f"q-{uuid.uuid4()}"
    ask(cache_gw, content, "no-store")
    assert ask(cache_gw, content).headers["x-gateway-cache"] == "miss"  # nothing was stored
    assert ask(cache_gw, content, "no-cache").headers["x-gateway-cache"] == "bypass"  # not read...
    assert len(upstream.calls("rc-up")) == 3
    assert ask(cache_gw, content).headers["x-gateway-cache"] == "hit"
    with pytest.raises(openai.BadRequestError):
        ask(cache_gw, content, "sometimes")


def test_streams_are_stored_and_hits_are_valid_streams(cache_gw: Gateway, upstream: FakeUpstreamThread) -> None:
    upstream.script("rc-up", {"reply": "one two three", "usage": USAGE})
    content = f"q-{uuid.uuid4()}"
    client = cache_gw.client()
    kwargs: Any = {"model": "cached", "messages": [{"role": "user", "content": content}], "temperature": 0,
                   "stream": True, "stream_options": {"include_usage": True}}
    first = list(client.chat.completions.create(**kwargs))
    assert first[-1].usage.model_dump()["cost"] == COST
    with client.chat.completions.with_streaming_response.create(**kwargs) as response:
        assert response.headers["x-gateway-cache"] == "hit"
        chunks = list(response.parse())
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "one two three"
    assert chunks[-1].usage.model_dump()["cost"] == 0 and chunks[-1].usage.prompt_tokens == 1000
    plain = ask(cache_gw, content)  # the stored stream also answers a non-streaming request
    assert plain.headers["x-gateway-cache"] == "hit" and plain.parse().choices[0].message.content == "one two three"
    assert len(upstream.calls("rc-up")) == 1


@pytest.mark.parametrize("fault", ["500", "drop"])
def test_errors_and_truncated_streams_are_never_cached(
    cache_gw: Gateway, upstream: FakeUpstreamThread, fault: str
) -> None:
    content = f"q-{uuid.uuid4()}"
    upstream.script("rc-up", {"output_tokens": 10, "fault": fault, "fault_times": 1})
    with pytest.raises(openai.APIError):
        list(cache_gw.client().chat.completions.create(
            model="cached", messages=[{"role": "user", "content": content}], temperature=0, stream=True))
    assert ask(cache_gw, content).headers["x-gateway-cache"] == "miss"
    assert len(upstream.calls("rc-up")) == 2


def test_entries_expire(cache_gw: Gateway) -> None:
    content = f"q-{uuid.uuid4()}"
    ask(cache_gw, content)
    assert ask(cache_gw, content).headers["x-gateway-cache"] == "hit"
    time.sleep(2.1)  # ttl_s: 2
    assert ask(cache_gw, content).headers["x-gateway-cache"] == "miss"


def _hit_soon(gw: Gateway, content: str, timeout: float = 5.0) -> bool:
    """Whether `gw` serves `content` from the cache once the background write has landed (and,
    for another process, its announcement has arrived); asks with no-store, so a miss stores
    nothing and a hit can only be the earlier answer."""
    deadline = time.monotonic() + timeout
    while ask(gw, content, "no-store").headers["x-gateway-cache"] != "hit":
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_redis_store_is_shared_and_outages_bypass(upstream: FakeUpstreamThread, redis_url: str) -> None:

    from conftest import free_port, start_redis_server

    config = cache_config(upstream, redis_url=redis_url, redis_prefix=f"test-{uuid.uuid4().hex[:8]}")
    a, b = Gateway(config), Gateway(config)
    try:
        content = f"q-{uuid.uuid4()}"
        ask(a, content)
        assert _hit_soon(b, content)  # stored by A, served by B
    finally:
        a.stop()
        b.stop()
    port = free_port()
    proc = start_redis_server(port)
    gw = None
    try:
        gw = Gateway(cache_config(upstream, redis_url=f"redis://127.0.0.1:{port}/0"))
        content = f"q-{uuid.uuid4()}"
        ask(gw, content)
        assert _hit_soon(gw, content)  # the background write has landed: the gateway knows the key
        proc.kill()
        proc.wait(5)
        down = ask(gw, content)
        assert down.headers["x-gateway-cache"] == "bypass" and down.parse().choices
        assert gw.metric("gateway_cache_errors_total", cache="response") >= 1
        proc = start_redis_server(port)
        assert ask(gw, content).headers["x-gateway-cache"] == "miss"  # back by itself (Redis restarted empty)
        assert _hit_soon(gw, content)
        assert httpx.get(f"{gw.url}/readyz").status_code == 200
    finally:
        if gw is not None:
            gw.stop()
        proc.kill()
        proc.wait(5)
