"""Metrics stay correct with several uvicorn workers (Prometheus multiprocess mode)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from conftest import Gateway, standard_config

from gateway.fake_upstream import FakeUpstreamThread
from gateway.observability.money_metrics import FLUSH_S


@pytest.fixture()
def two_workers(upstream: FakeUpstreamThread) -> Iterator[Gateway]:
    gw = Gateway(standard_config(upstream), workers=2)
    yield gw
    gw.stop()


def test_metrics_aggregate_across_two_workers(two_workers: Gateway, upstream: FakeUpstreamThread) -> None:
    upstream.script("gpt-4o-test", {"usage": {"prompt_tokens": 1000, "completion_tokens": 100}})
    from concurrent.futures import ThreadPoolExecutor

    client = two_workers.client()

    def one(_: int) -> str:  # new connections, 8 at a time, so both workers take requests
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-test", messages=[{"role": "user", "content": "hi"}], extra_headers={"connection": "close"})
        return str(raw.headers["x-gateway-cost-usd"])

    sent, writers = 0, set()
    with ThreadPoolExecutor(8) as pool:
        while len(writers) < 2 and sent < 200:  # a loaded machine may hand one worker a whole batch
            costs = list(pool.map(one, range(40)))
            assert set(costs) == {"0.0035"}  # 1000 x $2.50/M + 100 x $10/M
            sent += 40
            writers = {f.stem.rsplit("_", 1)[-1] for f in (two_workers.dir / "metrics").glob("counter_*.db")}
    assert len(writers) == 2  # both worker processes served requests and wrote metrics
    deadline = time.monotonic() + 10 * FLUSH_S  # each worker's money metrics reach the other's scrapes
    while not all(two_workers.metric("gateway_spend_usd_total", model="gpt-test") == sent * 35 / 10_000
                  for _ in range(4)):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    for _ in range(5):  # whichever worker answers the scrape, the totals are the same
        assert two_workers.metric("gateway_requests_total", model="gpt-test", status="200") == sent
        # Exact (40 float additions of 0.0035 make 0.1400000000000001).
        assert two_workers.metric("gateway_spend_usd_total", model="gpt-test") == sent * 35 / 10_000
        assert two_workers.metric("gateway_request_cost_usd_sum", model="gpt-test") == sent * 35 / 10_000
        assert two_workers.metric("gateway_request_cost_usd_bucket", model="gpt-test", le="0.005") == sent
        assert two_workers.metric("gateway_request_cost_usd_bucket", model="gpt-test", le="0.001") == 0
        assert two_workers.metric("gateway_tokens_total", model="gpt-test", type="input") == sent * 1000
        assert two_workers.metric("gateway_request_duration_seconds_count", model="gpt-test") == sent
