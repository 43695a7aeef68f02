"""A client that goes away mid-stream: the upstream request is cancelled, and what was produced
is still priced and counted."""

from __future__ import annotations

import time

import httpx
from conftest import Gateway

from gateway.fake_upstream import FakeUpstreamThread


def _wait_for(predicate, timeout: float = 5.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_client_disconnect_cancels_upstream_and_bills_produced_tokens(
    gateway: Gateway, upstream: FakeUpstreamThread
) -> None:
    upstream.script("gpt-4o-test", {"output_tokens": 200, "itl_ms": 50})
    before_output = gateway.metric("gateway_tokens_total", model="gpt-test", type="output")
    before_input = gateway.metric("gateway_tokens_total", model="gpt-test", type="input")
    before_499 = gateway.metric("gateway_requests_total", model="gpt-test", status="499")
    words = 0
    with httpx.stream("POST", f"{gateway.url}/v1/chat/completions", json={
        "model": "gpt-test", "messages": [{"role": "user", "content": "hi"}], "stream": True,
    }) as r:
        for line in r.iter_lines():
            if 'tok' in line:
                words += 1
            if words == 5:
                break  # leaving the block closes the connection
    assert _wait_for(lambda: gateway.metric("gateway_requests_total", model="gpt-test", status="499") > before_499)
    call = upstream.calls("gpt-4o-test")[-1]
    assert call["completed"] is False and call["chunks_sent"] < 50  # cancelled long before 200 words
    produced = gateway.metric("gateway_tokens_total", model="gpt-test", type="output") - before_output
    # every word the gateway relayed ("tok0".."tok4" = 2 tokens each) plus any still in flight
    assert 10 <= produced <= 2 * call["chunks_sent"]
    assert gateway.metric("gateway_tokens_total", model="gpt-test", type="input") - before_input == 8
    assert gateway.metric("gateway_usage_estimated_total", model="gpt-test", reason="disconnect") >= 1
