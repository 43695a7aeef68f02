"""Exploration: a model that stopped winning a cost-ranked tier (its estimate ran high) is
measured again now and then, and wins again once it is measured cheaper; in-process gateway,
the fake upstream over real HTTP, the openai client."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import model

from gateway.fake_upstream import FakeUpstreamThread

pytestmark = pytest.mark.anyio

PROMPT = [{"role": "user", "content": "Which of these fruit keep best in a cool cellar: " + ", ".join(
    f"variety {i}" for i in range(30)) + "?"}]


def config(upstream: FakeUpstreamThread, every: int) -> dict[str, Any]:
    a = model("a", "openai", upstream, upstream_model="exp-a", quality=70,
              pricing={"input_per_mtok": 1, "output_per_mtok": 4})
    b = model("b", "openai", upstream, upstream_model="exp-b", quality=70,
              pricing={"input_per_mtok": 0.9, "output_per_mtok": 3.6})  # 10 % cheaper per token
    return {"models": [a, b], "tiers": {"t": {"min_quality": 60}},
            "routing": {"explore": {"every": every, "max_extra_cost": 2.0, "after_s": 0}},
            "cache": {"response": {"enabled": False}}}


async def served(gw: Any, name: str) -> tuple[str, str]:
    answer = await gw.openai().chat.completions.with_raw_response.create(model=name, messages=PROMPT)
    return answer.headers["x-gateway-model"], answer.headers.get("x-gateway-route", "")


@pytest.mark.parametrize("every", [5, 0])
async def test_a_model_that_stopped_winning_is_measured_again(
        in_process: Any, upstream: FakeUpstreamThread, every: int) -> None:
    async with in_process(config(upstream, every)) as gw:
        assert (await served(gw, "t"))[0] == "b"  # cheaper per token, same expectation
        upstream.script("exp-b", {"output_tokens": 2000})
        for _ in range(6):  # by-name answers that run long: b's estimate doubles
            await served(gw, "b")
        upstream.script("exp-a", {"output_tokens": 300})
        upstream.script("exp-b", {"output_tokens": 20})  # ... but b now answers briefly
        chosen = [await served(gw, "t") for _ in range(40)]
    models = [m for m, _ in chosen]
    if every == 0:
        assert models == ["a"] * 40  # never measured again: b is out for good
        return
    explored = [route for m, route in chosen if "exploring" in route]
    assert explored and explored[0].endswith("exploring: not measured for 0 s")
    assert models[:3] == ["a"] * 3 and models[3] == "b"  # the tier's fifth request explores
    settled = [m for m, route in chosen[-10:] if "exploring" not in route]
    assert settled == ["b"] * 8  # measured cheaper, it wins again (a is explored in turn, every fifth)
