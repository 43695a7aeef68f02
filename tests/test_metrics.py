"""/metrics: the contract's names, and the same figures as the responses."""

from __future__ import annotations

import httpx
from conftest import Gateway

from gateway.fake_upstream import FakeUpstreamThread

REQUIRED = [
    "gateway_requests_total", "gateway_spend_usd_total", "gateway_tokens_total", "gateway_request_cost_usd",
    "gateway_request_duration_seconds", "gateway_upstream_ttft_seconds", "gateway_overhead_seconds",
    "gateway_upstream_errors_total",
]


def test_contract_metric_names_are_exported(gateway: Gateway) -> None:
    text = gateway.metrics()
    for name in REQUIRED:
        kind = "histogram" if name.endswith(("_usd", "_seconds")) else "counter"
        assert f"# TYPE {name} {kind}" in text


def test_stream_records_ttft_overhead_duration_and_cost(gateway: Gateway, upstream: FakeUpstreamThread) -> None:
    usage = {"prompt_tokens": 400, "completion_tokens": 40, "total_tokens": 440}
    upstream.script("gpt-4o-test", {"output_tokens": 4, "ttft_ms": 120, "usage": usage})
    before = {
        name: gateway.metric(name, model="gpt-test")
        for name in ("gateway_upstream_ttft_seconds_count", "gateway_upstream_ttft_seconds_sum",
                     "gateway_request_cost_usd_count", "gateway_request_cost_usd_sum",
                     "gateway_request_duration_seconds_count")
    }
    overhead_before = gateway.metric("gateway_overhead_seconds_count")
    chunks = list(gateway.client().chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "hi"}], stream=True,
        stream_options={"include_usage": True}))
    cost = chunks[-1].usage.model_dump()["cost"]
    assert cost == 0.0014  # 400 x $2.50/M + 40 x $10/M

    def delta(name: str) -> float:
        return gateway.metric(name, model="gpt-test") - before[name]

    assert delta("gateway_upstream_ttft_seconds_count") == 1
    assert 0.12 <= delta("gateway_upstream_ttft_seconds_sum") < 1.0
    assert delta("gateway_request_cost_usd_count") == 1
    assert round(delta("gateway_request_cost_usd_sum"), 12) == cost
    assert delta("gateway_request_duration_seconds_count") == 1
    assert gateway.metric("gateway_overhead_seconds_count") - overhead_before == 1


def test_request_id_is_echoed_when_safe(gateway: Gateway, upstream: FakeUpstreamThread) -> None:
    body = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}
    r = httpx.post(f"{gateway.url}/v1/chat/completions", json=body, headers={"x-request-id": "trace-42"})
    assert r.status_code == 200 and r.headers["x-request-id"] == "trace-42"
    r = httpx.post(f"{gateway.url}/v1/chat/completions", json=body, headers={"x-request-id": "bad id; drop"})
    assert len(r.headers["x-request-id"]) == 32 and " " not in r.headers["x-request-id"]
    r = httpx.post(f"{gateway.url}/v1/chat/completions", json={"model": "nope", "messages": []},
                   headers={"x-request-id": "trace-43"})
    assert r.status_code == 400 and r.headers["x-request-id"] == "trace-43"
