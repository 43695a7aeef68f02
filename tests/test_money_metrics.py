"""Money on /metrics is exact (integer pico-USD turned into USD once), not float accumulations:
10 requests at $0.00021 read $0.0021 in the spend counter and the cost histogram's sum, where ten
float additions make 0.0021000000000000007."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Gateway, model
from prometheus_client import CollectorRegistry

from gateway.fake_upstream import FakeUpstreamThread
from gateway.observability.money_metrics import FLUSH_S, MoneyCounter, MoneyMetrics

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
    total = ('gateway_spend_usd_total{model="mm-cheap",provider="openai",service_tier="default",team="",'
             'tier="mm-tier"} 0.0021\n')
    deadline = time.monotonic() + FLUSH_S + 0.5  # with two workers: each one's totals reach the other's scrapes
    while sum(total in gw.metrics() for _ in range(4)) < 4:  # within FLUSH_S
        assert time.monotonic() < deadline, "a worker's totals did not reach the other's scrapes in time"
        time.sleep(0.05)
    for _ in range(4):  # whichever worker answers
        text = gw.metrics()
        assert total in text
        assert 'gateway_routing_saved_usd_total{reason="tier",tier="mm-tier"} 0.0329\n' in text
        cost = 'gateway_request_cost_usd_{}{{{}model="mm-cheap",tier="mm-tier"}} {}\n'
        assert cost.format("sum", "", "0.0021") in text
        assert cost.format("count", "", f"{N}.0") in text
        assert cost.format("bucket", 'le="0.0001",', "0.0") in text  # $0.00021 > $0.0001
        assert cost.format("bucket", 'le="0.0005",', f"{N}.0") in text
        assert cost.format("bucket", 'le="+Inf",', f"{N}.0") in text
        assert gw.metric("gateway_requests_total", tier="mm-tier", status="200") == N


def _scrape(counters: MoneyMetrics) -> float:
    registry = CollectorRegistry()
    registry.register(counters)
    value = registry.get_sample_value("mm_spend_usd_total", {"team": "t"})
    assert value is not None
    return value


def _worker(directory: Path, pid: int) -> tuple[MoneyMetrics, MoneyCounter]:
    counters = MoneyMetrics(str(directory), pid=pid)
    return counters, counters.counter("mm_spend_usd_total", "Spend.", ["team"])


def test_a_total_never_goes_down_whichever_worker_answers(tmp_path: Path) -> None:
    """Worker A's newest money is not yet in its file when worker B answers the next scrape: A
    writes its file before answering, so B's scrape still reads at least what A's said."""
    a, spend_a = _worker(tmp_path, 101)
    b, spend_b = _worker(tmp_path, 102)
    spend_a.add(("t",), 10**12)
    spend_b.add(("t",), 10**12)
    a.flush(), b.flush()
    spend_a.add(("t",), 5 * 10**12)  # its periodic flush has not run yet
    assert _scrape(a) == 7.0
    assert _scrape(b) == 7.0


def test_a_worker_reusing_a_dead_workers_pid_carries_on(tmp_path: Path) -> None:
    dead, spend = _worker(tmp_path, 103)
    spend.add(("t",), 6 * 10**12)
    dead.flush()
    other, other_spend = _worker(tmp_path, 104)
    other_spend.add(("t",), 10**12)
    other.flush()
    reborn, reborn_spend = _worker(tmp_path, 103)
    reborn_spend.add(("t",), 2 * 10**12)
    assert _scrape(reborn) == 9.0 and _scrape(other) == 9.0


def test_cost_histogram_buckets_hold_amounts_up_to_their_bound() -> None:
    money = MoneyMetrics(None)
    cost = money.histogram("mm_cost_usd", "Cost.", ["m"], (1e-06, 5e-05, 1))
    for pico in (10**6, 10**6 + 1, 5 * 10**7, 10**12 + 1):  # $0.000001 sits in le="1e-06", one pico more does not
        cost.observe(("x",), pico)
    registry = CollectorRegistry()
    registry.register(money)
    buckets = {le: registry.get_sample_value("mm_cost_usd_bucket", {"m": "x", "le": le})
               for le in ("1e-06", "5e-05", "1.0", "+Inf")}
    assert buckets == {"1e-06": 1, "5e-05": 3, "1.0": 3, "+Inf": 4}
    assert registry.get_sample_value("mm_cost_usd_sum", {"m": "x"}) == (2 * 10**6 + 1 + 5 * 10**7 + 10**12 + 1) / 10**12


def test_a_file_of_another_shape_is_skipped_not_fatal(tmp_path: Path) -> None:
    (tmp_path / "money_999.json").write_text(
        '{"mm_spend_usd": [["t", 5000000000000], ["u", [1, 2]]], "mm_cost_usd": [["x", [1, 2]]]}')
    money, spend = _worker(tmp_path, 105)
    cost = money.histogram("mm_cost_usd", "Cost.", ["m"], (1e-06,))
    spend.add(("t",), 10**12)
    cost.observe(("x",), 1)
    assert _scrape(money) == 6.0  # the well-formed row is read, the others are skipped
    registry = CollectorRegistry()
    registry.register(money)
    assert registry.get_sample_value("mm_cost_usd_count", {"m": "x"}) == 1
