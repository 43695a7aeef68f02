"""Budget-capped output: a request whose worst case the key's remaining budget cannot pay gets its
max_tokens lowered to what the budget can pay (x-gateway-max-tokens), so spend cannot pass the
budget even when the client sets no max_tokens; a hold's default output is sent as max_tokens."""

from __future__ import annotations

from typing import Any

import openai
import pytest
from conftest import model

from gateway.fake_upstream import FakeUpstreamThread
from gateway.tokens.counter import TokenCounter

MASTER = "sk-master-budget-cap-0123456789"
HI = [{"role": "user", "content": "Write a long story."}]


def config(upstream: FakeUpstreamThread) -> dict[str, Any]:
    return {"master_key": MASTER, "require_keys": True, "cache": {"response": {"enabled": False}},
            "models": [model("cap-test", "openai", upstream, upstream_model="cap-up",
                             pricing={"input_per_mtok": 2.5, "output_per_mtok": 10})]}


async def new_key(gw: Any, **fields: Any) -> str:
    resp = await gw.client.post("/admin/keys", json=fields, headers={"Authorization": f"Bearer {MASTER}"})
    assert resp.status_code == 201, resp.text
    return str(resp.json()["key"])


@pytest.mark.anyio
async def test_the_budget_caps_max_tokens_and_spend_stays_under_it(
        in_process: Any, upstream: FakeUpstreamThread) -> None:
    prompt = TokenCounter().count_messages(HI, "cap-up")
    reserved_input = prompt + -(-prompt * 10 // 100)  # the 10 % input margin
    async with in_process(config(upstream)) as gw:
        client = gw.openai(api_key=await new_key(gw, budget_usd="0.01"))
        # worst case without max_tokens: 4,096 x $10/M = $0.04096 > $0.01: capped to what $0.01 pays
        cap = (10_000_000_000 - reserved_input * 2_500_000) // 10_000_000
        upstream.script("cap-up", {"output_tokens": cap, "usage": {"prompt_tokens": prompt, "completion_tokens": cap}})
        raw = await client.chat.completions.with_raw_response.create(model="cap-test", messages=HI)
        assert raw.headers["x-gateway-max-tokens"] == str(cap) and upstream.calls()[-1]["body"]["max_tokens"] == cap
        spent = raw.parse().usage.model_dump()["cost"]
        assert spent == (prompt * 2.5 + cap * 10) / 1e6 and spent <= 0.01
        # what is left pays for fewer than 16 tokens of output: refused, not capped
        with pytest.raises(openai.RateLimitError) as refused:
            await client.chat.completions.create(model="cap-test", messages=HI)
        assert refused.value.code == "budget_exceeded"


@pytest.mark.anyio
async def test_a_request_the_budget_can_pay_is_bounded_by_its_hold(
        in_process: Any, upstream: FakeUpstreamThread) -> None:
    upstream.script("cap-up", {"reply": "ok"})
    async with in_process(config(upstream)) as gw:
        client = gw.openai(api_key=await new_key(gw, budget_usd="10"))
        raw = await client.chat.completions.with_raw_response.create(model="cap-test", messages=HI)
        assert "x-gateway-max-tokens" not in raw.headers
        assert upstream.calls()[-1]["body"]["max_tokens"] == 4096  # the hold's default output, sent
        await client.chat.completions.create(model="cap-test", messages=HI, max_tokens=50)
        assert upstream.calls()[-1]["body"]["max_tokens"] == 50  # the client's own, untouched
        free = gw.openai(api_key=await new_key(gw))  # no budget: nothing to bound
        await free.chat.completions.create(model="cap-test", messages=HI)
        assert "max_tokens" not in upstream.calls()[-1]["body"]
