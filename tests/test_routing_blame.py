"""What a routed request may blame on a model: only the model's own failures. A key's own rate
limit and a deadline spent before the call are not the model's: no failover, no failure streak,
no cooling, no upstream-error metric."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from typing import Any

import httpx
import redis as redis_lib
from conftest import Gateway, free_port, model, start_redis_server

from gateway.fake_upstream import FakeUpstreamThread

MASTER = "master-test-key-123456"


def _config(upstream: FakeUpstreamThread, redis_url: str, **extra: Any) -> dict[str, Any]:
    return {
        "models": [model(name, "openai", upstream, upstream_model=f"{name}-up", quality=q,
                         pricing={"input_per_mtok": price, "output_per_mtok": 2})
                   for name, q, price in (("blame-a", 80, 1), ("blame-b", 90, 3))],
        "tiers": {"blame-tier": {"min_quality": 70}},
        "redis_url": redis_url, "redis_prefix": f"test-{uuid.uuid4().hex[:8]}",
        **extra,
    }


def _ask(gw: Gateway, secret: str, content: str = "hi", max_tokens: int = 5) -> httpx.Response:
    """temperature 0: answers may come from the response cache (when enabled)."""
    return httpx.post(gw.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {secret}"},
                      json={"model": "blame-tier", "messages": [{"role": "user", "content": content}],
                            "max_tokens": max_tokens, "temperature": 0}, timeout=30)


def _new_key(gw: Gateway, **fields: Any) -> str:
    made = httpx.post(gw.url + "/admin/keys", json=fields, headers={"Authorization": f"Bearer {MASTER}"})
    assert made.status_code == 201, made.text
    return str(made.json()["key"])


def _assert_nobody_blamed(gw: Gateway, secret: str) -> None:
    """No upstream error, no failover, and the next request goes to the cheapest model, nothing
    excluded (failure_threshold 1 in these tests: a blamed model would be cooling down)."""
    assert gw.metric("gateway_upstream_errors_total") == 0 and gw.metric("gateway_failovers_total") == 0
    again = _ask(gw, secret, "after")
    assert again.status_code == 200 and again.headers["x-gateway-model"] == "blame-a"
    assert again.headers["x-gateway-route"].startswith("cheapest; 2 candidates, 0 excluded; est $")


def test_a_keys_own_rate_limit_on_a_tier_is_not_failed_over(upstream: FakeUpstreamThread, redis_url: str) -> None:
    gw = Gateway(_config(upstream, redis_url, master_key=MASTER, require_keys=True,
                         cache={"response": {"enabled": False}}, routing={"failure_threshold": 1}))
    try:
        secret = _new_key(gw, rpm=2)
        answers = [_ask(gw, secret) for _ in range(2)]
        assert [(r.status_code, r.headers["x-gateway-model"]) for r in answers] == [(200, "blame-a")] * 2
        refused = _ask(gw, secret)
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limit_exceeded"
        assert "x-gateway-model" not in refused.headers or refused.headers["x-gateway-model"] == "blame-a"
        assert len(upstream.calls("blame-a-up")) == 2 and upstream.calls("blame-b-up") == []  # none called for it
        _assert_nobody_blamed(gw, _new_key(gw))
    finally:
        gw.stop()


def test_a_deadline_spent_before_the_call_blames_no_model(upstream: FakeUpstreamThread) -> None:
    """A cached answer's lookup waits on a stopped Redis (its 2 s socket timeout) past the 0.5 s
    routing deadline: the cache is bypassed, the first candidate is never called, and so it is
    not blamed."""
    port = free_port()
    redis = start_redis_server(port)
    gw = Gateway(_config(upstream, f"redis://127.0.0.1:{port}/0",
                         routing={"deadline_s": 0.5, "failure_threshold": 1, "cooldown_s": 60,
                                  "shared_state_refresh_s": 60}))
    try:
        first = _ask(gw, "x", "warm")  # routing state read once, kept for 60 s; the answer is cached
        assert first.status_code == 200 and first.headers["x-gateway-model"] == "blame-a"
        probe = redis_lib.Redis(port=port)
        deadline = time.monotonic() + 5
        while not probe.keys("*:rc:*"):  # the cache write runs in the background
            assert time.monotonic() < deadline, "the answer was never stored"
            time.sleep(0.02)
        probe.close()
        os.kill(redis.pid, signal.SIGSTOP)
        started = time.monotonic()
        try:
            late = _ask(gw, "x", "warm")
        finally:
            os.kill(redis.pid, signal.SIGCONT)
        assert time.monotonic() - started >= 1.5  # the cache lookup's wait, not the deadline
        assert late.status_code == 504, late.text
        assert late.json()["error"]["message"] == (
            "routing deadline of 0.5s exceeded in tier 'blame-tier' before 'blame-a' was called")
        assert len(upstream.calls("blame-a-up")) == 1 and upstream.calls("blame-b-up") == []
        _assert_nobody_blamed(gw, "x")
    finally:
        gw.stop()
        redis.kill()
        redis.wait(10)


def test_a_deadline_mostly_spent_before_the_call_blames_no_model(upstream: FakeUpstreamThread) -> None:
    """The budget hold waits 0.42 s on a paused Redis of the 0.5 s deadline; the model, 150 ms
    slow, gets the ~80 ms left and is cut short: under half of what a first attempt gets, so
    not its failure (had it been blamed, failure_threshold 1 would cool it for 60 s)."""
    port = free_port()
    redis = start_redis_server(port)
    gw = Gateway(_config(upstream, f"redis://127.0.0.1:{port}/0", master_key=MASTER, require_keys=True,
                         cache={"response": {"enabled": False}},
                         budgets={"key_cache_ttl_s": 60},
                         routing={"deadline_s": 0.5, "failure_threshold": 1, "cooldown_s": 60,
                                  "shared_state_refresh_s": 60}))
    try:
        secret = _new_key(gw, budget_usd=1)
        assert _ask(gw, secret, "warm").headers["x-gateway-model"] == "blame-a"  # key and routing state cached
        upstream.script("blame-a-up", {"latency_ms": 150})
        resume = threading.Timer(0.42, os.kill, (redis.pid, signal.SIGCONT))
        os.kill(redis.pid, signal.SIGSTOP)
        resume.start()
        try:
            late = _ask(gw, secret, "late")
        finally:
            resume.join()
        assert late.status_code == 504, late.text
        assert late.json()["error"]["message"].startswith("routing deadline of 0.5s exceeded in tier 'blame-tier'")
        upstream.script("blame-a-up", {})
        _assert_nobody_blamed(gw, secret)
    finally:
        gw.stop()
        redis.kill()
        redis.wait(10)


def test_a_failed_over_request_is_charged_its_actual_tokens(upstream: FakeUpstreamThread, redis_url: str) -> None:
    """TPM 100: each request is admitted at 8 counted input + 50 max_tokens = 58 tokens and
    corrected to what it used (28) when it settles, also after a failover. Uncorrected, the
    second request (58 + 58 > 100) would be refused."""
    usage = {"prompt_tokens": 8, "completion_tokens": 20, "total_tokens": 28}
    gw = Gateway(_config(upstream, redis_url, master_key=MASTER, require_keys=True,
                         cache={"response": {"enabled": False}}))
    try:
        secret = _new_key(gw, tpm=100)
        upstream.script("blame-a-up", {"fault": "500", "fault_times": 1, "usage": usage})
        upstream.script("blame-b-up", {"usage": usage})
        first = _ask(gw, secret, max_tokens=50)
        assert first.status_code == 200 and first.headers["x-gateway-model"] == "blame-b"
        assert "failover from blame-a" in first.headers["x-gateway-route"]
        deadline = time.monotonic() + 5  # the TPM correction is written in the background, within 0.5 s
        while (second := _ask(gw, secret, max_tokens=50)).status_code == 429 and time.monotonic() < deadline:
            time.sleep(0.05)  # (without it, 100 TPM would refill too slowly for any retry here to pass)
        assert second.status_code == 200, second.text
        assert second.headers["x-gateway-model"] == "blame-a"  # its one fault is spent
    finally:
        gw.stop()
