"""Money counters on /metrics are exact sums (integer pico-USD turned into USD once), not float
accumulations: 10 requests at $0.00021 read $0.0021, where ten float additions make
0.0021000000000000007."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import Gateway, model

from gateway.exact_counters import FLUSH_S
from gateway.fake_upstream import FakeUpstreamThread

HI: list[Any] = [{"role": "user", "content": "hi"}]
USAGE = {"usage": {"prompt_tokens": 1000, "completion_tokens": 100}}
N = 10
CHEAP, BASE = 210_000_000, 3_500_000_000  # pico-USD per request: 1000 x $0.15/M + 100 x $0.6/M; $2.5/M, $10/M


def _config(upstream: FakeUpstreamThread) -> dict[str, Any]:
    return {
        "models": [
            model("mm-cheap", "openai", upstream, upstream_model="mm-cheap-up", quality=80,
                  pricing={"input_per_mtok": 0.15, "output_per_mtok": 0.6}),
            model("mm-base", "openai", upstream, upstream_model="mm-base-up", quality=90,
                  pricing={"input_per_mtok": 2.5, "output_per_mtok": 10}),
        ],
        "tiers": {"mm-tier": {"min_quality": 70}},
    }


@pytest.fixture(params=[1, 2], ids=["one-worker", "two-workers"])
def gw(request: pytest.FixtureRequest, upstream: FakeUpstreamThread) -> Iterator[Gateway]:
    gateway = Gateway(_config(upstream), workers=request.param)
    yield gateway
    gateway.stop()


def _float_sum(pico: int, n: int) -> float:
    total = 0.0
    for _ in range(n):
        total += pico / 10**12
    return total


def test_money_counters_are_exact_sums(gw: Gateway, upstream: FakeUpstreamThread) -> None:
    upstream.script("mm-cheap-up", USAGE)
    client = gw.client()
    assert gw.metric("gateway_cache_write_premium_usd_total") == 0  # a counter without labels has its series
    for _ in range(N):  # new connections: with two workers, both take requests
        raw = client.chat.completions.with_raw_response.create(
            model="mm-tier", messages=HI, extra_headers={"connection": "close"})
        assert raw.headers["x-gateway-model"] == "mm-cheap" and raw.headers["x-gateway-cost-usd"] == "0.00021"
    spend, saved = CHEAP * N / 10**12, (BASE - CHEAP) * N / 10**12
    assert (spend, saved) == (0.0021, 0.0329)
    assert _float_sum(CHEAP, N) != spend and _float_sum(BASE - CHEAP, N) != saved  # what float counters would say
    time.sleep(FLUSH_S + 0.2)  # with two workers: each one's totals reach the other's scrapes within FLUSH_S
    for _ in range(4):  # whichever worker answers
        text = gw.metrics()
        assert 'gateway_spend_usd_total{model="mm-cheap",provider="openai",team="",tier="mm-tier"} 0.0021\n' in text
        assert 'gateway_routing_saved_usd_total{tier="mm-tier"} 0.0329\n' in text
        assert gw.metric("gateway_requests_total", tier="mm-tier", status="200") == N
