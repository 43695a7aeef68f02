"""Scale-out: two gateway processes, each with `--workers 2`, on one Redis. A budget is shared
(exhausted across both), the response cache is shared (stored via one, hit via the other), each
replica's /metrics sums its own workers (so the replicas' sums add up to the requests sent), and
`gateway_in_flight_requests` follows requests in flight on every path (non-streaming, streaming,
client disconnect, upstream error)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from conftest import Gateway, model

from gateway.fake_upstream import FakeUpstreamThread

MASTER = "master-scale-key-123456"
HI: Any = [{"role": "user", "content": "hi"}]
USAGE = {"prompt_tokens": 8, "completion_tokens": 20, "total_tokens": 28}  # $0.000048 at $1/$2 per M


class Pair:
    def __init__(self, upstream: FakeUpstreamThread, redis_url: str) -> None:
        config = {
            "models": [model("sc-a", "openai", upstream, upstream_model="sc-a-up",
                             pricing={"input_per_mtok": 1, "output_per_mtok": 2})],
            "master_key": MASTER, "redis_url": redis_url, "redis_prefix": f"test-{uuid.uuid4().hex[:8]}",
            "budgets": {"key_cache_ttl_s": 0.2},
        }
        self.a = Gateway(config, workers=2)
        self.b = Gateway(config, workers=2)
        self.sent = 0  # chat requests sent to either replica

    def key(self, **fields: Any) -> str:
        resp = httpx.post(self.a.url + "/admin/keys", json=fields, headers={"Authorization": f"Bearer {MASTER}"})
        assert resp.status_code == 201, resp.text
        return str(resp.json()["key"])

    def ask(self, gw: Gateway, api_key: str = "anonymous", **kw: Any) -> Any:
        self.sent += 1
        return gw.client(api_key=api_key).chat.completions.with_raw_response.create(
            model="sc-a", messages=HI, max_tokens=20, **kw)


@pytest.fixture(scope="module")
def pair(upstream: FakeUpstreamThread, redis_url: str) -> Iterator[Pair]:
    p = Pair(upstream, redis_url)
    yield p
    p.a.stop()
    p.b.stop()


def test_a_budget_is_shared_by_both_replicas(pair: Pair, upstream: FakeUpstreamThread) -> None:
    upstream.script("sc-a-up", {"usage": USAGE})
    # Each request holds $0.000049 (9 input with the margin + 20 output) and settles at $0.000048:
    # the 5th would need 4 x 48 + 49 = 241 micro-dollars > 200.
    secret = pair.key(alias="small", budget_usd="0.0002")
    served = 0
    for i in range(4):
        raw = pair.ask((pair.a, pair.b)[i % 2], secret)
        served += raw.http_response.status_code == 200
    assert served == 4
    for gw in (pair.a, pair.b, pair.a, pair.b):
        with pytest.raises(openai.RateLimitError) as info:
            pair.ask(gw, secret)
        assert info.value.code == "budget_exceeded"
    deadline = time.monotonic() + 5  # settlements land just after their answers
    while (spend := httpx.get(pair.b.url + "/v1/spend", headers={"Authorization": f"Bearer {secret}"}).json())[
            "reserved_usd"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert spend["spend_usd"] == pytest.approx(0.000192, abs=1e-12)


def test_the_response_cache_is_shared(pair: Pair, upstream: FakeUpstreamThread) -> None:
    upstream.script("sc-a-up", {"usage": USAGE, "reply": "cached answer"})
    secret = pair.key(alias="cache")
    first = pair.ask(pair.a, secret, temperature=0)
    assert first.headers["x-gateway-cache"] == "miss"
    deadline = time.monotonic() + 5
    while True:  # the store runs in the background after the first answer
        again = pair.ask(pair.b, secret, temperature=0)
        if again.headers["x-gateway-cache"] == "hit" or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert again.headers["x-gateway-cache"] == "hit"
    assert again.parse().choices[0].message.content == "cached answer"
    assert again.headers["x-gateway-cost-usd"] == "0"
    assert len(upstream.calls("sc-a-up")) == 1


def _in_flight(gw: Gateway) -> float:
    return gw.metric("gateway_in_flight_requests")


def _wait_for(gw: Gateway, value: float, timeout: float = 5.0) -> float:
    deadline = time.monotonic() + timeout
    while (seen := _in_flight(gw)) != value and time.monotonic() < deadline:
        time.sleep(0.02)
    return seen


def test_in_flight_gauge_follows_every_path(pair: Pair, upstream: FakeUpstreamThread) -> None:
    assert _in_flight(pair.a) == 0 and _in_flight(pair.b) == 0
    upstream.script("sc-a-up", {"usage": USAGE, "latency_ms": 800})
    slow = [threading.Thread(target=pair.ask, args=(pair.a,)) for _ in range(3)]
    for t in slow:
        t.start()
    assert _wait_for(pair.a, 3) == 3  # non-streaming, summed over the replica's two workers
    assert _in_flight(pair.b) == 0
    for t in slow:
        t.join()
    assert _wait_for(pair.a, 0) == 0
    upstream.script("sc-a-up", {"usage": USAGE, "output_tokens": 40, "itl_ms": 50})
    pair.sent += 1
    with httpx.stream("POST", pair.b.url + "/v1/chat/completions", timeout=10,
                      json={"model": "sc-a", "messages": HI, "stream": True}) as resp:
        chunks = resp.iter_bytes()  # keep the iterator: dropping it closes the connection
        next(chunks)
        assert _in_flight(pair.b) == 1  # streaming: until the last byte
    assert _wait_for(pair.b, 0) == 0  # the client went away mid-stream
    upstream.script("sc-a-up", {"fault": "500"})
    with pytest.raises(openai.InternalServerError):
        pair.ask(pair.b)
    pair.sent += 1
    with httpx.stream("POST", pair.b.url + "/v1/chat/completions", timeout=10,
                      json={"model": "sc-a", "messages": HI, "stream": True}) as resp:
        assert resp.status_code >= 500
    assert _wait_for(pair.b, 0) == 0 and _in_flight(pair.a) == 0


def test_per_replica_metrics_sum_to_the_requests_sent(pair: Pair) -> None:
    counted = pair.a.metric("gateway_requests_total") + pair.b.metric("gateway_requests_total")
    assert pair.sent > 0 and counted == pair.sent
    assert pair.a.metric("gateway_requests_total") > 0 and pair.b.metric("gateway_requests_total") > 0
