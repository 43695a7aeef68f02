"""Service tiers in the pricing core (default, flex, priority, batch) and deferrable requests, through
the openai client against the fake upstream: every figure exact to the pico-dollar.

The model `svc-test` costs $2/M input, $0.50/M cached input and $8/M output by default; $1/M and
$4/M at flex (cached input not given: the default's, scaled alike, $0.25/M); $3.50/M, $0.875/M and
$14/M at priority. The bill follows the tier the response REPORTS, not the one asked for."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import openai
import pytest
from conftest import model

from gateway.fake_upstream import FakeUpstreamThread
from gateway.money.price_table import load_price_table
from gateway.money.pricing import Usage, price_usage
from gateway.tokens.counter import TokenCounter

MASTER = "sk-master-service-tiers-0123456789"
HI: list[Any] = [{"role": "user", "content": "Sort these numbers, no hurry."}]
USAGE = {"prompt_tokens": 2000, "completion_tokens": 300, "prompt_tokens_details": {"cached_tokens": 1500},
         "completion_tokens_details": {"reasoning_tokens": 0}}
# 500 x $2/M + 1,500 x $0.50/M + 300 x $8/M
DEFAULT_COST = 500 * 2_000_000 + 1500 * 500_000 + 300 * 8_000_000  # pico-USD
FLEX_COST = 500 * 1_000_000 + 1500 * 250_000 + 300 * 4_000_000
PRIORITY_COST = 500 * 3_500_000 + 1500 * 875_000 + 300 * 14_000_000

SVC_PRICING = {"input_per_mtok": 2, "output_per_mtok": 8, "cached_input_per_mtok": 0.5,
               "service_tiers": {"flex": {"input_per_mtok": 1, "output_per_mtok": 4},
                                 "priority": {"input_per_mtok": 3.5, "output_per_mtok": 14,
                                              "cached_input_per_mtok": 0.875}}}


def config(upstream: FakeUpstreamThread, **extra: Any) -> dict[str, Any]:
    return {
        "master_key": MASTER, "cache": {"response": {"enabled": False}},
        "models": [
            model("svc-test", "openai", upstream, upstream_model="svc-up", quality=80, pricing=SVC_PRICING),
            # no flex price: a deferrable request goes at the default tier (priority: $4/$16)
            model("plain-test", "openai", upstream, upstream_model="plain-up", quality=80,
                  pricing={"input_per_mtok": 1.5, "output_per_mtok": 6,
                           "service_tiers": {"priority": {"input_per_mtok": 4, "output_per_mtok": 16}}}),
        ],
        **extra,
    }


def usd(pico: int) -> float:
    return pico / 10**12


async def ledger(gw: Any) -> list[Any]:
    await gw.drain()
    now = datetime.now(UTC)
    return [r async for page in gw.state.ledger.pages(now - timedelta(hours=1), now + timedelta(hours=1))
            for r in page]


def test_the_price_table_prices_each_service_tier_and_stacks_the_discount_with_cache_reads() -> None:
    table = load_price_table()
    usage = Usage(input=1000, cached_input=1000, output=1000)
    mini = table.price("openai", "gpt-5-mini")
    assert mini is not None
    # $0.25/M, $0.025/M cached, $2/M out; flex and batch half; priority $0.45, $0.045, $3.60
    assert price_usage(usage, mini).total == 250_000_000 + 25_000_000 + 2_000_000_000
    for tier in ("flex", "batch"):
        assert price_usage(Usage(1000, 1000, 0, 0, 1000, service_tier=tier), mini).total == 1_137_500_000
    assert price_usage(Usage(1000, 1000, 0, 0, 1000, service_tier="priority"), mini).total == 4_095_000_000
    # gpt-4o-mini has no batch price for cached input: the batch discount (50 %) applies to it too
    four = table.price("openai", "gpt-4o-mini")
    assert four is not None and four.for_service("batch").base.cached_input == 37_500
    assert not four.has_service("flex")  # no flex offering: a flex answer is billed at the default price
    assert price_usage(Usage(1000, service_tier="flex"), four).total == 150_000_000
    # Anthropic batch: cache writes at half too (5-minute $1.875/M, 1-hour $3/M)
    sonnet = table.price("anthropic", "claude-sonnet-4-5")
    assert sonnet is not None
    batch = sonnet.for_service("batch").base
    assert (batch.input, batch.cache_write_5m, batch.cache_write_1h, batch.output) == (
        1_500_000, 1_875_000, 3_000_000, 7_500_000)
    assert Usage.from_anthropic({"input_tokens": 5, "service_tier": "batch"}).service_tier == "batch"
    assert Usage.from_anthropic({"input_tokens": 5, "service_tier": "standard"}).service_tier == "default"


@pytest.mark.anyio
@pytest.mark.parametrize(("asked", "reported", "pico"), [
    (None, None, DEFAULT_COST),
    ("flex", None, FLEX_COST),
    ("priority", None, PRIORITY_COST),
    ("priority", "default", DEFAULT_COST),  # asked for priority, served (and billed) at default
    ("auto", "priority", PRIORITY_COST),  # the project's default tier is priority: billed so
    ("flex", "scale", DEFAULT_COST),  # reserved capacity: the default price
])
async def test_the_bill_follows_the_service_tier_the_response_reports(
        in_process: Any, upstream: FakeUpstreamThread, asked: str | None, reported: str | None, pico: int) -> None:
    upstream.script("svc-up", {"reply": "1 2 3", "usage": USAGE, **({"service_tier": reported} if reported else {})})
    extra = {"service_tier": asked} if asked else {}
    tier = {"flex": "flex", "priority": "priority"}.get(reported or asked or "default", "default")
    async with in_process(config(upstream)) as gw:
        client = gw.openai()
        raw = await client.chat.completions.with_raw_response.create(model="svc-test", messages=HI, **extra)
        usage = raw.parse().usage.model_dump()
        assert raw.headers["x-gateway-cost-usd"] == f"{pico / 10**12:.12f}".rstrip("0")
        assert usage["cost"] == usd(pico)
        assert usage["cost_details"].get("service_tier", "default") == tier
        stream = await client.chat.completions.create(model="svc-test", messages=HI, stream=True,
                                                      stream_options={"include_usage": True}, **extra)
        chunks = [c async for c in stream]
        assert chunks[-1].usage.model_dump()["cost"] == usd(pico)  # a stream costs the same
        assert [c["body"].get("service_tier") for c in upstream.calls("svc-up")] == [asked, asked]
        rows = await ledger(gw)
        assert [(r.service_tier, r.cost_pico) for r in rows] == [(tier, pico), (tier, pico)]
        assert gw.metric("gateway_spend_usd_total", model="svc-test", service_tier=tier) == usd(2 * pico)


@pytest.mark.anyio
async def test_a_priority_request_is_held_at_the_priority_price(in_process: Any, upstream: FakeUpstreamThread) -> None:
    prompt = TokenCounter().count_messages(HI, "svc-up")
    reserved_input = prompt + -(-prompt * 10 // 100)
    async with in_process(config(upstream, require_keys=True)) as gw:
        made = await gw.client.post("/admin/keys", json={"budget_usd": "0.01"},
                                    headers={"Authorization": f"Bearer {MASTER}"})
        client = gw.openai(api_key=made.json()["key"])
        upstream.script("svc-up", {"reply": "ok"})
        raw = await client.chat.completions.with_raw_response.create(model="svc-test", messages=HI,
                                                                     service_tier="priority")
        # what $0.01 pays for at $3.50/M in and $14/M out (not at the default $2/M and $8/M)
        assert raw.headers["x-gateway-max-tokens"] == str((10**10 - reserved_input * 3_500_000) // 14_000_000)


@pytest.mark.anyio
async def test_a_deferrable_request_goes_at_flex_and_its_saving_is_counted(
        in_process: Any, upstream: FakeUpstreamThread) -> None:
    upstream.script("svc-up", {"reply": "1 2 3", "usage": USAGE})
    upstream.script("plain-up", {"reply": "1 2 3", "usage": USAGE})
    async with in_process(config(upstream)) as gw:
        client = gw.openai(default_headers={"x-gateway-defer": "flex"})
        completion = await client.chat.completions.create(model="svc-test", messages=HI)
        assert completion.usage.model_dump()["cost"] == usd(FLEX_COST)
        assert upstream.calls("svc-up")[-1]["body"]["service_tier"] == "flex"
        assert gw.metric("gateway_routing_saved_usd_total", reason="flex") == usd(DEFAULT_COST - FLEX_COST)
        # a model with no flex tier is called as usual, at the default price
        plain = await client.chat.completions.create(model="plain-test", messages=HI)
        assert "service_tier" not in upstream.calls("plain-up")[-1]["body"]
        assert plain.usage.model_dump()["cost"] == usd(500 * 1_500_000 + 1500 * 1_500_000 + 300 * 6_000_000)
        rows = await ledger(gw)
        assert [(r.model, r.service_tier, r.routing_saved_pico) for r in rows] == [
            ("svc-test", "flex", DEFAULT_COST - FLEX_COST), ("plain-test", "default", 0)]


@pytest.mark.anyio
async def test_no_flex_capacity_falls_back_to_the_default_tier(in_process: Any, upstream: FakeUpstreamThread) -> None:
    upstream.script("svc-up", {"reply": "done", "usage": USAGE, "fault": "429", "fault_service_tier": "flex",
                               "error_message": "Resource Unavailable: flex capacity is exhausted"})
    async with in_process(config(upstream)) as gw:
        client = gw.openai(default_headers={"x-gateway-defer": "flex"})
        for stream in (False, True):
            if stream:
                chunks = [c async for c in await client.chat.completions.create(
                    model="svc-test", messages=HI, stream=True, stream_options={"include_usage": True})]
                cost = chunks[-1].usage.model_dump()["cost"]
            else:
                cost = (await client.chat.completions.create(model="svc-test", messages=HI)).usage.model_dump()["cost"]
            assert cost == usd(DEFAULT_COST)
        assert [c["body"].get("service_tier") for c in upstream.calls("svc-up")] == ["flex", None, "flex", None]
        assert gw.metric("gateway_flex_fallbacks_total", model="svc-test") == 2
        assert gw.metric("gateway_upstream_errors_total", model="svc-test") == 0  # no failure of the model
        assert gw.metric("gateway_routing_saved_usd_total", reason="flex") == 0


@pytest.mark.anyio
async def test_a_responses_request_may_wait_too(in_process: Any, upstream: FakeUpstreamThread) -> None:
    """The Responses API goes to an OpenAI model natively: at flex when it may wait, its usage
    (Responses convention) priced at flex; and back to the default tier when flex has no room."""
    usage = {"input_tokens": 2000, "input_tokens_details": {"cached_tokens": 1500}, "output_tokens": 300,
             "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 2300}
    upstream.script("svc-up", {"reply": "1 2 3", "usage": usage})
    async with in_process(config(upstream)) as gw:
        client = gw.openai(default_headers={"x-gateway-defer": "flex"})
        response = await client.responses.create(model="svc-test", input="Sort 3 1 2.")
        assert response.service_tier == "flex" and upstream.calls("svc-up")[-1]["body"]["service_tier"] == "flex"
        assert response.usage.model_dump()["cost"] == usd(FLEX_COST)
        upstream.script("svc-up", {"reply": "1 2 3", "usage": usage, "fault": "429", "fault_service_tier": "flex"})
        events = [e async for e in await client.responses.create(model="svc-test", input="Sort 3 1 2.",
                                                                   stream=True)]
        final = events[-1].response
        assert final.service_tier == "default" and final.usage.model_dump()["cost"] == usd(DEFAULT_COST)
        assert [c["body"].get("service_tier") for c in upstream.calls("svc-up")] == ["flex", "flex", None]
        assert gw.metric("gateway_flex_fallbacks_total", model="svc-test") == 1
        rows = await ledger(gw)
        assert [(r.service_tier, r.cost_pico) for r in rows] == [("flex", FLEX_COST), ("default", DEFAULT_COST)]


@pytest.mark.anyio
async def test_deferral_changes_which_model_a_tier_picks(in_process: Any, upstream: FakeUpstreamThread) -> None:
    """At default prices plain-test ($1.50/$6) is cheaper than svc-test ($2/$8); at flex svc-test
    ($1/$4) is: a deferrable request (the header, or a tier with `defer: flex`) goes to it."""
    upstream.script("svc-up", {"output_tokens": 64})  # both write what an unseen model is expected to
    upstream.script("plain-up", {"output_tokens": 64})
    tiers = {"now": {"min_quality": 70}, "later": {"min_quality": 70, "defer": "flex"}}
    async with in_process(config(upstream, tiers=tiers)) as gw:
        client = gw.openai()
        later = await client.chat.completions.with_raw_response.create(model="later", messages=HI)
        assert later.headers["x-gateway-model"] == "svc-test"
        assert upstream.calls("svc-up")[-1]["body"]["service_tier"] == "flex"
        header = await client.chat.completions.with_raw_response.create(
            model="now", messages=HI, extra_headers={"x-gateway-defer": "flex"})
        assert header.headers["x-gateway-model"] == "svc-test"
        now = await client.chat.completions.with_raw_response.create(model="now", messages=HI)
        assert now.headers["x-gateway-model"] == "plain-test"
        estimate = (await gw.client.post("/v1/estimate", json={"model": "now", "messages": HI},
                                         headers={"x-gateway-defer": "flex"})).json()
        assert estimate["model"] == "svc-test"
        costs = {c["model"]: c["estimated_cost_usd"] for c in estimate["candidates"]}
        assert costs["svc-test"] * 1.5 == pytest.approx(costs["plain-test"])  # $1/$4 against $1.50/$6


@pytest.mark.anyio
async def test_a_tier_request_is_priced_at_the_service_tier_it_asks_for(
        in_process: Any, upstream: FakeUpstreamThread) -> None:
    """At priority svc-test ($3.50/$14) is cheaper than plain-test ($4/$16): a priority request
    goes to it, even on a tier that defers (a priority request is not deferred)."""
    upstream.script("svc-up", {"output_tokens": 64})
    upstream.script("plain-up", {"output_tokens": 64})
    tiers = {"now": {"min_quality": 70}, "later": {"min_quality": 70, "defer": "flex"}}
    async with in_process(config(upstream, tiers=tiers)) as gw:
        client = gw.openai()
        for tier in ("now", "later"):
            raw = await client.chat.completions.with_raw_response.create(model=tier, messages=HI,
                                                                         service_tier="priority")
            assert raw.headers["x-gateway-model"] == "svc-test"
            assert upstream.calls("svc-up")[-1]["body"]["service_tier"] == "priority"
        estimate = (await gw.client.post("/v1/estimate", json={"model": "now", "messages": HI,
                                                               "service_tier": "priority"})).json()
        costs = {c["model"]: c["estimated_cost_usd"] for c in estimate["candidates"]}
        assert estimate["model"] == "svc-test" and costs["svc-test"] * 8 == pytest.approx(costs["plain-test"] * 7)


@pytest.mark.anyio
@pytest.mark.parametrize(("headers", "body", "message"), [
    ({"x-gateway-defer": "later"}, {}, "x-gateway-defer must be 'flex'"),
    ({"x-gateway-defer": "flex"}, {"service_tier": "priority"}, "cannot be combined with service_tier 'priority'"),
    ({}, {"service_tier": 3}, "'service_tier' must be a string"),
])
async def test_bad_service_tier_input_is_a_clear_400(in_process: Any, upstream: FakeUpstreamThread,
                                                     headers: dict[str, str], body: dict[str, Any],
                                                     message: str) -> None:
    async with in_process(config(upstream)) as gw:
        with pytest.raises(openai.BadRequestError) as refused:
            await gw.openai().chat.completions.create(model="svc-test", messages=HI, extra_headers=headers,
                                                      extra_body=body)
        assert message in refused.value.message
        assert upstream.calls("svc-up") == []
