"""The prompt-prefix index through the openai client (real Redis, fake upstream): automatic
Anthropic breakpoints priced exactly, and routing that prefers a warm model only when the
arithmetic says so."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from conftest import Gateway, model

from gateway.cache.prefix_blocks import BLOCK_TOKENS, prompt_blocks
from gateway.fake_upstream import FakeUpstreamThread
from gateway.tokens.counter import TokenCounter

CLAUDE = {"input_per_mtok": 3, "output_per_mtok": 15, "cached_input_per_mtok": 0.3, "cache_write_per_mtok": 3.75}

# The bearer token the tests' openai clients send: estimates see the prefix index as that tenant.
SAME_TENANT = {"Authorization": "Bearer client-key"}

def long_text(tag: str) -> str:
    return f"{tag} " + "You are a careful assistant who answers briefly. " * 200  # ~1,800 tokens


def layout_tokens(messages: list[Any], stable: bool) -> int:
    blocks = prompt_blocks(TokenCounter(), {"messages": messages}, "o200k_base")
    return blocks.stable_tokens if stable else blocks.tokens


@pytest.fixture(scope="module")
def claude_gw(upstream: FakeUpstreamThread, redis_url: str) -> Iterator[Gateway]:
    gw = Gateway({"models": [model("claude-pc", "anthropic", upstream, upstream_model="claude-pc-up", pricing=CLAUDE)],
                  "redis_url": redis_url, "redis_prefix": f"test-{uuid.uuid4().hex[:8]}"})
    yield gw
    gw.stop()


def _send(gw: Gateway, upstream: FakeUpstreamThread, messages: list[Any], usage: dict[str, int]) -> Any:
    upstream.script("claude-pc-up", {"usage": usage})
    raw = gw.client().chat.completions.with_raw_response.create(model="claude-pc", messages=messages, max_tokens=50)
    return raw, upstream.calls("claude-pc-up")[-1]["body"]


def _settled(gw: Gateway, name: str, value: float, **labels: str) -> None:
    """Wait for a metric written after the response (the index record happens in the background)."""
    deadline = time.monotonic() + 3
    while round(gw.metric(name, **labels), 12) != value and time.monotonic() < deadline:
        time.sleep(0.05)
    assert round(gw.metric(name, **labels), 12) == value


def _recorded(gw: Gateway, messages: list[Any], predicted: str) -> None:
    """Wait until routing predicts `predicted` (cache_write_tokens or cached_tokens) for
    `messages` at claude-pc: the earlier prompt's blocks are recorded after its response."""
    deadline = time.monotonic() + 5
    body = {"model": "claude-pc", "messages": messages, "max_tokens": 50}
    while not httpx.post(f"{gw.url}/v1/estimate", json=body, headers=SAME_TENANT).json()["candidates"][0][predicted]:
        assert time.monotonic() < deadline, f"no {predicted} were ever predicted"
        time.sleep(0.02)


def test_long_system_prompt_gets_a_breakpoint_the_second_time(claude_gw: Gateway, upstream: FakeUpstreamThread) -> None:
    system = long_text(uuid.uuid4().hex)
    stable = layout_tokens([{"role": "system", "content": system}, {"role": "user", "content": "x"}], stable=True)
    ask = [{"role": "system", "content": system}, {"role": "user", "content": "first?"}]
    raw, sent = _send(claude_gw, upstream, ask, {"input_tokens": 1810, "output_tokens": 20})
    assert "cache_control" not in sent["system"][-1]  # first sight: a write would not be repaid yet
    assert raw.headers["x-gateway-cost-usd"] == "0.00573"  # 1810 x $3/M + 20 x $15/M

    ask[1] = {"role": "user", "content": "second?"}
    _recorded(claude_gw, ask, "cache_write_tokens")  # sent before: a write will be repaid now
    raw, sent = _send(claude_gw, upstream, ask, {"input_tokens": 10, "cache_creation_input_tokens": 1800,
                                                 "output_tokens": 20})
    assert sent["system"][-1]["cache_control"] == {"type": "ephemeral"}
    assert "cache_control" not in str(sent["messages"])  # one breakpoint, at the end of the stable prefix
    usage = raw.parse().usage
    assert raw.headers["x-gateway-cost-usd"] == "0.00708"  # 10 x 3 + 1800 x 3.75 + 20 x 15, per M
    assert usage.prompt_tokens == 1810 and usage.prompt_tokens_details.cached_tokens == 0
    _settled(claude_gw, "gateway_cache_write_premium_usd_total", 0.00135)  # 1800 x (3.75 - 3) / M

    ask[1] = {"role": "user", "content": "third?"}
    _recorded(claude_gw, ask, "cached_tokens")  # written at the breakpoint: read now
    raw, sent = _send(claude_gw, upstream, ask, {"input_tokens": 10, "cache_read_input_tokens": stable,
                                                 "output_tokens": 20})
    assert sent["system"][-1]["cache_control"] == {"type": "ephemeral"}
    cost = (10 * 3 + stable * 0.3 + 20 * 15) / 1e6
    assert raw.parse().usage.cost == pytest.approx(cost, abs=1e-12)
    _settled(claude_gw, "gateway_cache_saved_usd_total", round(stable * 2.7 / 1e6, 12), cache="prefix")
    _settled(claude_gw, "gateway_prefix_prediction_tokens_total", stable, outcome="correct")
    assert claude_gw.metric("gateway_prefix_prediction_tokens_total", outcome="over") == 0
    plan = httpx.post(f"{claude_gw.url}/v1/estimate", json={"model": "claude-pc", "messages": ask},
                      headers=SAME_TENANT).json()
    assert plan["candidates"][0]["cached_tokens"] == stable


def test_client_breakpoints_are_left_alone(claude_gw: Gateway, upstream: FakeUpstreamThread) -> None:
    system = long_text(uuid.uuid4().hex)
    own = [{"role": "system", "content": [{"type": "text", "text": system}]},
           {"role": "user", "content": [{"type": "text", "text": "mine", "cache_control": {"type": "ephemeral"}}]}]
    _send(claude_gw, upstream, own, {"input_tokens": 1810, "output_tokens": 20})
    plain = [{"role": "system", "content": system}, {"role": "user", "content": "other"}]
    _recorded(claude_gw, plain, "cache_write_tokens")  # the prompt is known: without its own marks, it would get one
    _, sent = _send(claude_gw, upstream, own, {"input_tokens": 1810, "output_tokens": 20})
    assert "cache_control" not in sent["system"][-1]
    assert sent["messages"][-1]["content"][-1]["cache_control"] == {"type": "ephemeral"}


@pytest.fixture(scope="module")
def warm_gw(upstream: FakeUpstreamThread, redis_url: str) -> Iterator[Gateway]:
    def priced(name: str, quality: int, inp: float, cached: float) -> dict[str, Any]:
        return model(name, "openai", upstream, upstream_model=f"{name}-up", quality=quality,
                     pricing={"input_per_mtok": inp, "output_per_mtok": 1, "cached_input_per_mtok": cached})

    gw = Gateway({"models": [priced("pc-a", 80, 1.00, 0.50), priced("pc-b", 85, 1.10, 0.11),
                             priced("pc-c", 90, 1.10, 1.05)],
                  "tiers": {"pc": {"min_quality": 80}},
                  "redis_url": redis_url, "redis_prefix": f"test-{uuid.uuid4().hex[:8]}"})
    yield gw
    gw.stop()


def _estimate(gw: Gateway, messages: list[Any]) -> dict[str, Any]:
    return httpx.post(f"{gw.url}/v1/estimate", json={"model": "pc", "messages": messages, "max_tokens": 10},
                      headers=SAME_TENANT).json()


def _warm_at(gw: Gateway, model_name: str, messages: list[Any]) -> int:
    """Send the prompt by name, then wait until routing sees it warm; the predicted cached tokens."""
    gw.client().chat.completions.create(model=model_name, messages=messages, max_tokens=10)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        cached = {c["model"]: c["cached_tokens"] for c in _estimate(gw, messages)["candidates"]}
        if cached[model_name]:
            return int(cached[model_name])
        time.sleep(0.05)
    raise AssertionError("the prompt never became warm")


def test_routing_prefers_the_warm_model_when_the_arithmetic_says_so(
    warm_gw: Gateway, upstream: FakeUpstreamThread
) -> None:
    prompt = [{"role": "user", "content": long_text(uuid.uuid4().hex)}]
    assert _estimate(warm_gw, prompt)["model"] == "pc-a"  # cold: the lowest input price wins
    cached = _warm_at(warm_gw, "pc-b", prompt)
    total = layout_tokens(prompt, stable=False)
    assert cached == total // BLOCK_TOKENS * BLOCK_TOKENS  # every complete block is warm
    plan = _estimate(warm_gw, prompt)
    assert plan["model"] == "pc-b"
    inputs = plan["candidates"][0]["input_tokens"]
    expected = ((inputs - cached) * 1.10 + cached * 0.11 + 10 * 1) / 1e6
    assert plan["estimated_cost_usd"] == pytest.approx(expected, abs=1e-12)
    upstream.script("pc-b-up", {"usage": {"prompt_tokens": inputs, "completion_tokens": 10, "total_tokens": inputs + 10,
                                          "prompt_tokens_details": {"cached_tokens": cached}}})
    raw = warm_gw.client().chat.completions.with_raw_response.create(model="pc", messages=prompt, max_tokens=10)
    assert raw.headers["x-gateway-model"] == "pc-b"
    assert raw.parse().usage.cost == pytest.approx(((inputs - cached) * 1.10 + cached * 0.11 + 10) / 1e6, abs=1e-12)
    _settled(warm_gw, "gateway_prefix_prediction_tokens_total", cached, outcome="correct")


def test_a_warm_model_does_not_win_when_its_discount_is_too_small(warm_gw: Gateway) -> None:
    prompt = [{"role": "user", "content": long_text(uuid.uuid4().hex)}]
    assert _warm_at(warm_gw, "pc-c", prompt) > 0
    assert _estimate(warm_gw, prompt)["model"] == "pc-a"  # warm pc-c still costs more than cold pc-a
    raw = warm_gw.client().chat.completions.with_raw_response.create(model="pc", messages=prompt, max_tokens=10)
    assert raw.headers["x-gateway-model"] == "pc-a"
