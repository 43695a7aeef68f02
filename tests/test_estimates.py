"""Honest estimates: expected output per request and model (the request's shape, the model's
verbosity, a reasoning model's reasoning), learned from by-name and tier traffic without one
biasing the other; in-process gateway, the fake upstream over real HTTP, the openai client."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import InProcess, model

from gateway.fake_upstream import FakeUpstreamThread

pytestmark = pytest.mark.anyio

# 112 prompt tokens, no long-form cue: a "general" request (base 256 tokens before any answer).
PROMPT = [{"role": "user", "content": "Here is a list of fruit and their colours for the shop: " + " ".join(
    f"item{i} is red," for i in range(25)) + " which two are the ripest?"}]
ONE_WORD = [{"role": "user", "content": "Yes or no?"}]


def config(upstream: FakeUpstreamThread, *models: dict[str, Any], **tiers: Any) -> dict[str, Any]:
    return {"models": list(models), "tiers": tiers, "cache": {"response": {"enabled": False}}}


async def route(gw: InProcess, model_name: str, messages: Any, **body: Any) -> Any:
    return await gw.openai().chat.completions.with_raw_response.create(model=model_name, messages=messages, **body)


async def estimate(gw: InProcess, **body: Any) -> dict[str, Any]:
    response = await gw.client.post("/v1/estimate", json=body)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def test_a_dearer_model_answering_short_by_name_does_not_capture_the_tier(
        in_process: Any, upstream: FakeUpstreamThread) -> None:
    mini = model("mini", "openai", upstream, upstream_model="est-mini", quality=70,
                 pricing={"input_per_mtok": 0.40, "output_per_mtok": 1.60})
    big = model("big", "openai", upstream, upstream_model="est-big", quality=80,
                pricing={"input_per_mtok": 2, "output_per_mtok": 8})
    async with in_process(config(upstream, mini, big, mix={"min_quality": 60})) as gw:
        chosen = []
        for _ in range(20):
            upstream.script("est-big", {"output_tokens": 3})
            for _ in range(10):  # by-name traffic: terse answers
                await route(gw, "big", ONE_WORD)
            upstream.script("est-big", {"output_tokens": 450})
            upstream.script("est-mini", {"output_tokens": 450})
            answer = await route(gw, "mix", PROMPT)
            chosen.append(answer.headers["x-gateway-model"])
        assert chosen == ["mini"] * 20  # the old running average sent 20 of 20 to big (5x dearer)
        plan = await estimate(gw, model="mix", messages=PROMPT)
        expected = {c["model"]: c["expected_output_tokens"] for c in plan["candidates"]}
        assert expected["mini"] == 450  # learned from its own tier answers
        assert 225 <= expected["big"] <= 450  # terse by name: at most half the others for this shape


async def test_equal_list_prices_are_not_equal_costs_for_a_reasoning_model(
        in_process: Any, upstream: FakeUpstreamThread) -> None:
    prices = {"input_per_mtok": 2, "output_per_mtok": 8}
    thinker = model("thinker", "openai", upstream, upstream_model="est-o3", quality=86, reasoning=True,
                    pricing=prices)
    plain = model("plain", "openai", upstream, upstream_model="est-41", quality=80, pricing=prices)
    capital = [{"role": "user", "content": "What is the capital of France?"}]
    async with in_process(config(upstream, thinker, plain, std={"min_quality": 75}, top={"min_quality": 85})) as gw:
        plan = await estimate(gw, model="std", messages=capital)
        rows = {c["model"]: c for c in plan["candidates"]}
        assert plan["model"] == "plain"
        assert rows["thinker"]["expected_reasoning_tokens"] == 2000  # medium effort, before any is measured
        assert rows["plain"]["expected_reasoning_tokens"] == 0
        low = await estimate(gw, model="std", messages=capital, reasoning_effort="low")
        assert {c["model"]: c["expected_reasoning_tokens"] for c in low["candidates"]}["thinker"] == 600
        assert (await estimate(gw, model="top", messages=capital))["model"] == "thinker"  # its quality is needed
        upstream.script("est-o3", {"usage": {"prompt_tokens": 15, "completion_tokens": 310, "total_tokens": 325,
                                             "completion_tokens_details": {"reasoning_tokens": 300}}})
        for _ in range(30):
            await route(gw, "thinker", capital)
        learned = (await estimate(gw, model="thinker", messages=capital))["candidates"][0]
        assert 294 <= learned["expected_reasoning_tokens"] <= 306  # its own reasoning, measured (within 2 %)


async def test_estimates_track_what_answers_cost(in_process: Any, upstream: FakeUpstreamThread) -> None:
    """A scripted workload (every answer 200 tokens): after ten answers the estimate is within
    10 % of the actual cost, and the histogram of actual / estimated says so."""
    a = model("acc-a", "openai", upstream, upstream_model="est-a", quality=70,
              pricing={"input_per_mtok": 1, "output_per_mtok": 4})
    b = model("acc-b", "openai", upstream, upstream_model="est-b", quality=72,
              pricing={"input_per_mtok": 3, "output_per_mtok": 9})
    async with in_process(config(upstream, a, b, acc={"min_quality": 60})) as gw:
        upstream.script("est-a", {"output_tokens": 200})
        ratios = []
        for _ in range(20):
            plan = await estimate(gw, model="acc", messages=PROMPT)
            answer = await route(gw, "acc", PROMPT)
            assert answer.headers["x-gateway-model"] == plan["model"] == "acc-a"  # the estimate is what it does
            assert answer.headers["x-gateway-route"].endswith(f"est ${plan['estimated_cost_usd']:.15g}".rstrip("0"))
            ratios.append(float(answer.headers["x-gateway-cost-usd"]) / plan["estimated_cost_usd"])
        assert ratios[0] < 0.9  # 256 expected before any answer, 200 written
        assert all(0.9 <= r <= 1.1 for r in ratios[10:]), ratios
        assert gw.metric("gateway_routing_estimate_ratio_count", tier="acc") == 20
        within = (gw.metric("gateway_routing_estimate_ratio_bucket", tier="acc", le="1.1")
                  - gw.metric("gateway_routing_estimate_ratio_bucket", tier="acc", le="0.8"))
        assert within >= 10


def test_request_shapes() -> None:
    from gateway.routing.outputs import request_shape

    def shape(content: str, needs: frozenset[str] = frozenset(), **body: Any) -> str:
        return request_shape([{"role": "user", "content": content}], needs, body)

    assert shape("What is the capital of France?") == "short"
    assert shape("Write an essay on the causes of the First World War.") == "long"
    assert shape("implement a function that parses ISO dates") == "long"
    assert shape("Classify this ticket.", frozenset({"tools"})) == "structured"
    assert shape("Classify this ticket.", response_format={"type": "json_object"}) == "structured"
    assert shape("word " * 200) == "general"
    assert request_shape([{"role": "system", "content": "You are terse. " * 20}, {"role": "user", "content": "Hi"}],
                         frozenset(), {}) == "general"  # the whole conversation's length counts
