"""Quality by category: the request's category is detected in-process, named in the route, and
a tier keeps the models that meet its floor for that category."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import model

from gateway.fake_upstream import FakeUpstreamThread
from gateway.routing.categories import detect_category


@pytest.mark.parametrize(("messages", "category"), [
    ([{"role": "user", "content": "What is the capital of France?"}], "overall"),
    ([{"role": "user", "content": "Fix this Python function: def f(x): return x +"}], "coding"),
    ([{"role": "user", "content": "```\nSELECT * FROM t\n``` why is it slow?"}], "coding"),
    ([{"role": "user", "content": "Solve for x: 3x + 5 = 20"}], "math"),
    ([{"role": "user", "content": "Write a short poem about the sea at night."}], "creative_writing"),
    ([{"role": "user", "content": "List the planets in exactly 5 bullet points."}], "instruction_following"),
    ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
      {"role": "user", "content": "and?"}, {"role": "assistant", "content": "yes"},
      {"role": "user", "content": "so?"}], "multiturn"),
    ([{"role": "user", "content": "Tell me about this contract. " + "Clause text goes here. " * 300}], "long"),
    ([{"role": "user", "content": [{"type": "text", "text": "Prove the theorem of Pythagoras"}]}], "math"),
])
def test_categories_are_detected(messages: list[Any], category: str) -> None:
    assert detect_category(messages) == category


@pytest.mark.anyio
async def test_a_tier_keeps_the_models_that_meet_its_floor_for_the_category(
        in_process: Any, upstream: FakeUpstreamThread) -> None:
    coder = model("coder", "openai", upstream, upstream_model="cat-coder",
                  quality={"overall": 70, "coding": 90}, pricing={"input_per_mtok": 5, "output_per_mtok": 20})
    generalist = model("generalist", "openai", upstream, upstream_model="cat-general",
                       quality={"overall": 80, "coding": 60}, pricing={"input_per_mtok": 1, "output_per_mtok": 2})
    config = {"models": [coder, generalist], "tiers": {"good": {"min_quality": 75}},
              "cache": {"response": {"enabled": False}}}
    async with in_process(config) as gw:
        client = gw.openai()
        chat = await client.chat.completions.with_raw_response.create(
            model="good", messages=[{"role": "user", "content": "Summarise the plot of Hamlet."}])
        assert chat.headers["x-gateway-model"] == "generalist"
        assert chat.headers["x-gateway-route"].startswith("cheapest; 1 candidate, 1 excluded; est $")
        code = await client.chat.completions.with_raw_response.create(
            model="good", messages=[{"role": "user", "content": "Refactor this JavaScript function for me."}])
        assert code.headers["x-gateway-model"] == "coder"
        assert code.headers["x-gateway-route"].startswith("cheapest; 1 candidate, 1 excluded; category coding; est $")
        plan = (await gw.client.post("/v1/estimate", json={
            "model": "good", "messages": [{"role": "user", "content": "Refactor this JavaScript function."}]})).json()
        assert plan["model"] == "coder"
        assert plan["excluded"] == [{"model": "generalist", "reason": "coding quality 60.0 < 75"}]
        listed = {m.id: m for m in (await client.models.list()).data}
        assert listed["coder"].quality_by_category == {"overall": 70, "coding": 90}  # type: ignore[attr-defined]


def test_a_quality_map_is_checked_at_start_up() -> None:
    from gateway.config.schema import ConfigError, parse_config

    base = {"name": "m", "provider": "openai", "api_base": "http://127.0.0.1:9/v1", "api_key": "k"}
    for quality, message in (({"coding": 80}, "a quality map needs an 'overall' score"),
                             ({"overall": 80, "cooking": 70}, "unknown category cooking"),
                             ({"overall": 120}, r"models\[0\]\.quality: must be <= 100")):
        with pytest.raises(ConfigError, match=message):
            parse_config({"models": [{**base, "quality": quality}]})
