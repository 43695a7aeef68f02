"""Providers outside the fast path go through litellm's translation (imported after start-up, in
the warm-up thread, when such a model has a key)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from conftest import UPSTREAM_KEY, Gateway

from gateway.fake_upstream import FakeUpstreamThread


@pytest.fixture(scope="module")
def litellm_gateway(upstream: FakeUpstreamThread) -> Iterator[Gateway]:
    gw = Gateway({"models": [{
        "name": "via-litellm", "provider": "github", "upstream_model": "llama-sim",
        "api_base": upstream.url + "/v1", "api_key": UPSTREAM_KEY,
        "pricing": {"input_per_mtok": 0.6, "output_per_mtok": 1.2, "cached_input_per_mtok": 0.3},
    }]})
    yield gw
    gw.stop()


def test_litellm_is_imported_off_the_event_loop(litellm_gateway: Gateway) -> None:
    """The import (4-7 s of CPU) runs in the warm-up thread after start-up; the first request,
    sent before it is done, waits for it in a worker thread, so the event loop keeps serving.
    (First in this module: the gateway has just started.)"""
    answers: list[Any] = []
    worker = threading.Thread(target=lambda: answers.append(litellm_gateway.client().chat.completions.create(
        model="via-litellm", messages=[{"role": "user", "content": "hi"}])))
    worker.start()
    slowest = 0.0
    while worker.is_alive():
        started = time.monotonic()
        assert httpx.get(litellm_gateway.url + "/healthz", timeout=30).status_code == 200
        slowest = max(slowest, time.monotonic() - started)
        time.sleep(0.05)
    worker.join()
    assert answers and answers[0].choices[0].message.content
    assert slowest < 1.5  # blocked on the import, the loop would not answer for seconds
    deadline = time.monotonic() + 30
    while "litellm imported" not in litellm_gateway.logs():
        assert time.monotonic() < deadline, litellm_gateway.logs()
        time.sleep(0.1)


def test_completion_stream_and_errors_through_litellm(litellm_gateway: Gateway, upstream: FakeUpstreamThread) -> None:
    usage = {"prompt_tokens": 1000, "completion_tokens": 50, "total_tokens": 1050,
             "prompt_tokens_details": {"cached_tokens": 400}}
    upstream.script("llama-sim", {"reply": "hello from litellm", "usage": usage})
    client = litellm_gateway.client(timeout=60)
    raw = client.chat.completions.with_raw_response.create(
        model="via-litellm", messages=[{"role": "user", "content": "hi"}])
    assert raw.parse().choices[0].message.content == "hello from litellm"
    # 600 x $0.60/M + 400 x $0.30/M + 50 x $1.20/M
    assert raw.headers["x-gateway-cost-usd"] == "0.00054"
    assert upstream.calls("llama-sim")[-1]["headers"]["authorization"] == f"Bearer {UPSTREAM_KEY}"

    chunks = list(client.chat.completions.create(
        model="via-litellm", messages=[{"role": "user", "content": "hi"}], stream=True,
        stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "hello from litellm"
    assert chunks[-1].usage.model_dump()["cost"] == 0.00054

    upstream.script("llama-sim", {"fault": "429", "retry_after": "3"})
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="via-litellm", messages=[{"role": "user", "content": "hi"}])
    upstream.script("llama-sim", {"fault": "500"})
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="via-litellm", messages=[{"role": "user", "content": "hi"}])
    assert info.value.status_code == 502
    assert UPSTREAM_KEY not in litellm_gateway.logs()
