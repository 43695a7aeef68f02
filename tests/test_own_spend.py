"""GET /v1/spend tells a key what it spent, with a budget or without one (memory and Redis)."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import pytest
from conftest import model

from gateway.fake_upstream import FakeUpstreamThread

pytestmark = pytest.mark.anyio
MASTER = "sk-master-own-spend"


@pytest.mark.parametrize("store", ["memory", "redis"])
@pytest.mark.parametrize("budget", [None, 1])
async def test_spend_is_what_the_key_spent(
    in_process: Any, upstream: FakeUpstreamThread, request: pytest.FixtureRequest, store: str, budget: int | None,
) -> None:
    upstream.script("spend-up", {"usage": {"prompt_tokens": 8, "completion_tokens": 30}})
    config: dict[str, Any] = {"master_key": MASTER, "models": [model(
        "spend-model", "openai", upstream, upstream_model="spend-up",
        pricing={"input_per_mtok": 2.5, "output_per_mtok": 10})]}
    if store == "redis":
        config.update(redis_url=request.getfixturevalue("redis_url"), redis_prefix=f"test-{uuid.uuid4().hex[:8]}")
    async with in_process(config) as gw:
        fields = {"alias": "spender"} if budget is None else {"alias": "spender", "budget_usd": budget}
        created = await gw.client.post("/admin/keys", headers={"authorization": f"Bearer {MASTER}"}, json=fields)
        key = created.json()["key"]
        client = gw.openai(api_key=key)
        costs = []
        for _ in range(3):
            raw = await client.chat.completions.with_raw_response.create(
                model="spend-model", messages=[{"role": "user", "content": "hi"}])
            costs.append(Decimal(raw.headers["x-gateway-cost-usd"]))
        assert costs == [Decimal("0.00032")] * 3  # 8 x $2.5/M + 30 x $10/M
        await gw.drain()
        own = (await gw.client.get("/v1/spend", headers={"authorization": f"Bearer {key}"})).json()
        assert Decimal(str(own["spend_usd"])) == sum(costs) and own["reserved_usd"] == 0
        assert own["budget_usd"] == budget
        assert own["remaining_usd"] == (None if budget is None else float(budget - sum(costs)))
