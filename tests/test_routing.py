"""Cost-aware routing through the openai client against fake upstreams with different prices."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml
from conftest import ROOT, Gateway, model

from gateway.fake_upstream import FakeUpstreamThread

SHORT: Any = [{"role": "user", "content": "hi"}]
LONG: Any = [{"role": "user", "content": "word " * 2000}]
TOOLS: Any = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
IMAGE: Any = [{"role": "user", "content": [{"type": "text", "text": "what"},
                                           {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]


def routing_config(upstream: FakeUpstreamThread) -> dict[str, Any]:
    def m(name: str, quality: float, inp: float, out: float, **extra: Any) -> dict[str, Any]:
        extra.setdefault("capabilities", [])
        return model(name, "openai", upstream, upstream_model=f"r-{name}", quality=quality,
                     pricing={"input_per_mtok": inp, "output_per_mtok": out}, **extra)

    return {
        "models": [
            m("cheap", 70, 0.10, 2.00),  # cheap input, dear output
            m("balanced", 75, 1.00, 1.00),
            m("tiny", 85, 0.05, 0.05, max_input_tokens=100),  # cheapest, tiny context window
            m("seer", 80, 2.00, 4.00, capabilities=["vision", "tools"]),
            m("smart", 90, 3.00, 15.00, capabilities=["vision", "tools"]),
        ],
        "tiers": {
            "standard": {"min_quality": 70},
            "premium": {"min_quality": 88},
            "preferred": {"min_quality": 70, "policy": "ordered", "order": ["balanced", "cheap"]},
            "custom": {"min_quality": 70, "policy": "dearest_policy"},
        },
        "routing": {"failure_threshold": 2, "cooldown_s": 1.0, "max_attempts": 3},
    }


@pytest.fixture(scope="module")
def router_gw(upstream: FakeUpstreamThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    policies = tmp_path_factory.mktemp("policies")
    (policies / "dearest_policy.py").write_text(
        "class Dearest:\n"
        "    name = 'dearest'\n"
        "    def rank(self, candidates, tier):\n"
        "        return sorted(candidates, key=lambda c: -c.estimated_cost_pico)\n"
        "POLICY = Dearest()\n"
    )
    gw = Gateway(routing_config(upstream), env={"PYTHONPATH": f"{policies}:{ROOT}"})
    yield gw
    gw.stop()


def estimate(gw: Gateway, **body: Any) -> dict[str, Any]:
    r = httpx.post(f"{gw.url}/v1/estimate", json=body)
    assert r.status_code == 200, r.text
    return dict(r.json())


def routed(gw: Gateway, **kwargs: Any) -> Any:
    return gw.client().chat.completions.with_raw_response.create(**kwargs)


@pytest.mark.parametrize(
    ("tier", "messages", "extra", "winner"),
    [
        ("standard", SHORT, {"max_tokens": 1000}, "balanced"),  # output-heavy: balanced beats cheap
        ("standard", LONG, {"max_tokens": 10}, "cheap"),  # input-heavy: cheap wins
        ("standard", SHORT, {"max_tokens": 20}, "tiny"),  # fits tiny's window: cheapest of all
        ("standard", SHORT, {"tools": TOOLS}, "seer"),  # tools: only seer and smart qualify
        ("standard", IMAGE, {}, "seer"),  # vision
        ("premium", SHORT, {}, "smart"),
        ("preferred", LONG, {"max_tokens": 10}, "balanced"),  # ordered: preference over price
        ("custom", SHORT, {"max_tokens": 20}, "smart"),  # a user policy module from config
    ],
)
def test_cheapest_qualifying_model_wins_and_estimate_agrees(
    router_gw: Gateway, tier: str, messages: Any, extra: dict[str, Any], winner: str
) -> None:
    plan = estimate(router_gw, model=tier, messages=messages, **extra)
    assert plan["model"] == winner and plan["tier"] == tier
    raw = routed(router_gw, model=tier, messages=messages, **extra)
    assert raw.headers["x-gateway-model"] == winner
    assert raw.headers["x-gateway-tier"] == tier
    assert raw.headers["x-gateway-route"].startswith(plan["policy"] + ";")
    costs = [c["estimated_cost_usd"] for c in plan["candidates"]]
    if plan["policy"] == "cheapest":
        assert costs == sorted(costs)


def test_estimate_lists_costs_and_exclusions_with_reasons(router_gw: Gateway) -> None:
    plan = estimate(router_gw, model="standard", messages=SHORT, max_tokens=1000)
    # "hi": 8 prompt tokens, and each model's expected output (at most the 1,000 of max_tokens)
    prices = {"balanced": (1, 1), "cheap": (0.1, 2), "seer": (2, 4), "smart": (3, 15)}  # $/M in, out
    assert {c["model"] for c in plan["candidates"]} == set(prices)
    for c in plan["candidates"]:
        (inp, out), tokens = prices[c["model"]], c["expected_output_tokens"]
        assert 1 <= tokens <= 1000 and c["input_tokens"] == 8
        assert c["estimated_cost_usd"] == (round(8 * inp * 10**6) + round(tokens * out * 10**6)) / 10**12
    one = estimate(router_gw, model="standard", messages=SHORT, max_tokens=1)  # tiny's window fits 8 + 1
    assert (one["model"], one["estimated_cost_usd"]) == ("tiny", 0.00000045)  # 8 x $0.05/M + 1 x $0.05/M
    excluded = {e["model"]: e["reason"] for e in plan["excluded"]}
    assert excluded == {"tiny": "context window: 8 input + 1000 max output tokens > 100"}
    plan = estimate(router_gw, model="premium", messages=SHORT)
    assert {e["model"] for e in plan["excluded"]} == {"cheap", "balanced", "tiny", "seer"}


def test_expected_output_is_learned_from_completions(router_gw: Gateway, upstream: FakeUpstreamThread) -> None:
    def expected() -> int:
        return int(estimate(router_gw, model="premium", messages=SHORT)["candidates"][0]["expected_output_tokens"])

    # "hi" is a short prompt: what "smart" is expected to write is the short shape's base (learned
    # from every model's answers) times smart's own verbosity (learned from its answers).
    before = expected()
    upstream.script("r-smart", {"output_tokens": 400})
    for _ in range(10):
        routed(router_gw, model="premium", messages=SHORT)
    assert expected() > before
    upstream.script("r-smart", {"output_tokens": 40})
    for _ in range(80):  # robust steps: each at most a tenth of the way (log space) once enough are seen
        routed(router_gw, model="premium", messages=SHORT)
    plan = estimate(router_gw, model="premium", messages=SHORT)
    assert plan["candidates"][0]["expected_output_tokens"] == 40
    assert plan["estimated_cost_usd"] == 0.000624  # 8 x $3/M + 40 x $15/M
    upstream.script("r-smart", {"output_tokens": 4000})
    routed(router_gw, model="premium", messages=SHORT)  # one runaway answer
    assert expected() <= 49  # two clipped tenth-steps (shape and model) at most, not 4,000
    plan = estimate(router_gw, model="premium", messages=SHORT, max_tokens=30)
    assert plan["candidates"][0]["expected_output_tokens"] == 30  # bounded by the request's max_tokens


def test_no_candidate_for_the_request_is_400_saying_why(router_gw: Gateway) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        router_gw.client().chat.completions.create(
            model="standard", messages=SHORT, response_format={"type": "json_schema", "json_schema": {"name": "x"}})
    assert "lacks capability json_schema" in str(info.value)
    with pytest.raises(openai.NotFoundError):
        router_gw.client().chat.completions.create(model="no-such-tier", messages=SHORT)


def test_failover_to_next_cheapest_on_500(router_gw: Gateway, upstream: FakeUpstreamThread) -> None:
    upstream.script("r-balanced", {"fault": "500", "fault_times": 1})
    before = router_gw.metric("gateway_failovers_total", tier="standard")
    raw = routed(router_gw, model="standard", messages=SHORT, max_tokens=1000)
    assert raw.headers["x-gateway-model"] == "cheap"
    assert "failover from balanced (server_error)" in raw.headers["x-gateway-route"]
    assert router_gw.metric("gateway_failovers_total", tier="standard") - before == 1
    assert len(upstream.calls("r-balanced")) == 1 and len(upstream.calls("r-cheap")) == 1


def test_cooldown_after_repeated_failures_then_recovery(router_gw: Gateway, upstream: FakeUpstreamThread) -> None:
    upstream.script("r-smart", {"fault": "503"})
    for _ in range(2):  # premium has one candidate: each failure reaches the client
        with pytest.raises(openai.InternalServerError) as info:
            router_gw.client().chat.completions.create(model="premium", messages=SHORT)
        assert info.value.status_code == 502
    with pytest.raises(openai.InternalServerError) as cooling:
        router_gw.client().chat.completions.create(model="premium", messages=SHORT)
    assert cooling.value.status_code == 503 and "cooling down" in str(cooling.value)
    assert len(upstream.calls("r-smart")) == 2  # the cooling model was not called
    upstream.script("r-smart", {})
    time.sleep(1.1)
    assert routed(router_gw, model="premium", messages=SHORT).headers["x-gateway-model"] == "smart"


def test_retry_after_cools_the_rate_limited_model(router_gw: Gateway, upstream: FakeUpstreamThread) -> None:
    upstream.script("r-balanced", {"fault": "429", "retry_after": "1", "fault_times": 1})
    raw = routed(router_gw, model="standard", messages=SHORT, max_tokens=1000)
    assert raw.headers["x-gateway-model"] == "cheap"
    excluded = {e["model"]: e["reason"] for e in estimate(router_gw, model="standard", messages=SHORT)["excluded"]}
    assert excluded["balanced"].startswith("cooling down")
    time.sleep(1.1)
    assert estimate(router_gw, model="standard", messages=SHORT, max_tokens=1000)["model"] == "balanced"


def test_savings_against_the_baseline_are_exact(router_gw: Gateway, upstream: FakeUpstreamThread) -> None:
    upstream.script("r-cheap", {"usage": {"prompt_tokens": 2000, "completion_tokens": 10}})
    before = router_gw.metric("gateway_routing_saved_usd_total", tier="standard")
    raw = routed(router_gw, model="standard", messages=LONG, max_tokens=10)
    assert raw.headers["x-gateway-model"] == "cheap"
    assert raw.headers["x-gateway-cost-usd"] == "0.00022"  # 2000 x $0.10/M + 10 x $2/M
    saved = router_gw.metric("gateway_routing_saved_usd_total", tier="standard") - before
    assert round(saved, 12) == 0.00615 - 0.00022  # baseline smart: 2000 x $3/M + 10 x $15/M
    assert router_gw.metric("gateway_requests_total", model="cheap", tier="standard", status="200") >= 1


def test_route_cli_agrees_with_the_endpoint(router_gw: Gateway, tmp_path: Path) -> None:
    config = yaml.safe_load((router_gw.dir / "config.yaml").read_text())
    del config["tiers"]["custom"]  # its policy module is only on the gateway's PYTHONPATH
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    # A prompt no test sent before: cold in the gateway's prefix index and in the CLI's (empty) one.
    cold: Any = [{"role": "user", "content": "cold " * 2000}]
    (tmp_path / "request.json").write_text(json.dumps({"model": "standard", "messages": cold, "max_tokens": 10}))
    out = subprocess.run(
        [sys.executable, "-m", "gateway", "route", "--tier", "standard", "--file", str(tmp_path / "request.json"),
         "--config", str(tmp_path / "config.yaml")], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    cli = json.loads(out.stdout)
    assert cli == estimate(router_gw, model="standard", messages=cold, max_tokens=10)


def test_streamed_request_fails_over_before_the_first_byte(router_gw: Gateway, upstream: FakeUpstreamThread) -> None:
    upstream.script("r-balanced", {"fault": "503", "fault_times": 1})
    upstream.script("r-cheap", {"reply": "from cheap"})
    with router_gw.client().chat.completions.with_streaming_response.create(
        model="standard", messages=SHORT, max_tokens=1000, stream=True
    ) as response:
        assert response.headers["x-gateway-model"] == "cheap"
        assert "failover from balanced" in response.headers["x-gateway-route"]
        text = "".join(c.choices[0].delta.content or "" for c in response.parse() if c.choices)
    assert text == "from cheap"


def test_a_slow_model_times_out_into_failover_within_the_overall_deadline(upstream: FakeUpstreamThread) -> None:
    config = routing_config(upstream)
    del config["tiers"]["custom"]  # its policy module is the router_gw fixture's
    for m in config["models"]:
        m["timeout_s"] = 0.3
    config["routing"]["deadline_s"] = 5
    gw = Gateway(config)
    try:
        upstream.script("r-balanced", {"latency_ms": 2000})
        raw = routed(gw, model="standard", messages=SHORT, max_tokens=1000)
        assert raw.headers["x-gateway-model"] == "cheap"  # balanced timed out after 0.3 s
        assert "failover from balanced (timeout)" in raw.headers["x-gateway-route"]

        for m in config["models"]:
            m["timeout_s"] = 30
        config["routing"]["deadline_s"] = 0.6
        gw.stop()
        gw = Gateway(config)
        calls_before = len(upstream.calls("r-cheap"))
        started = time.monotonic()
        with pytest.raises(openai.InternalServerError) as info:
            gw.client(max_retries=0).chat.completions.create(model="standard", messages=SHORT, max_tokens=1000)
        took = time.monotonic() - started
        assert info.value.status_code == 504 and "routing deadline of 0.6s exceeded" in str(info.value)
        assert 0.6 <= took < 1.9  # the deadline, not balanced's 2 s answer nor its 30 s timeout
        assert len(upstream.calls("r-cheap")) == calls_before  # no attempt after the deadline

        started = time.monotonic()  # a stream: the deadline bounds the wait for its head
        with pytest.raises(openai.InternalServerError) as info:
            gw.client(max_retries=0).chat.completions.create(
                model="standard", messages=SHORT, max_tokens=1000, stream=True)
        took = time.monotonic() - started
        assert info.value.status_code == 504 and "routing deadline of 0.6s exceeded" in str(info.value)
        assert 0.6 <= took < 1.9
        assert len(upstream.calls("r-cheap")) == calls_before
    finally:
        upstream.script("r-balanced", {})
        gw.stop()
