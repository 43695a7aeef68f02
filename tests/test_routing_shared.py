"""Routing state in Redis is shared by gateway processes: cooldowns and learned output lengths."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from conftest import Gateway
from test_routing import SHORT, routing_config

from gateway.fake_upstream import FakeUpstreamThread

REFRESH_S = 0.2


@pytest.fixture()
def two_gateways(upstream: FakeUpstreamThread, redis_url: str) -> Iterator[tuple[Gateway, Gateway]]:
    config: dict[str, Any] = {**routing_config(upstream), "redis_url": redis_url,
                              "redis_prefix": f"test-{uuid.uuid4().hex[:8]}"}
    config["tiers"] = {k: v for k, v in config["tiers"].items() if k != "custom"}
    # a cooldown that outlasts B's first (cold) request on a slow machine: the test reads it, never waits it out
    config["routing"] = {**config.get("routing", {}), "shared_state_refresh_s": REFRESH_S, "cooldown_s": 60.0}
    a, b = Gateway(config), Gateway(config)
    yield a, b
    a.stop()
    b.stop()


def test_cooldown_and_learned_output_are_shared_across_processes(
    two_gateways: tuple[Gateway, Gateway], upstream: FakeUpstreamThread
) -> None:
    a, b = two_gateways
    upstream.script("r-smart", {"fault": "500"})
    for _ in range(2):  # two failures on process A: smart cools down for every process
        with pytest.raises(openai.InternalServerError):
            a.client().chat.completions.create(model="premium", messages=SHORT)
    with pytest.raises(openai.InternalServerError) as info:
        b.client().chat.completions.create(model="premium", messages=SHORT)
    assert info.value.status_code == 503 and "cooling down" in str(info.value)
    assert len(upstream.calls("r-smart")) == 2

    upstream.script("r-cheap", {"output_tokens": 33})
    a.client().chat.completions.create(model="standard", messages=[{"role": "user", "content": "word " * 2000}],
                                       max_tokens=10)
    deadline = time.monotonic() + 10 * REFRESH_S  # A writes successes back, B refetches, once per interval each
    while True:
        plan = httpx.post(f"{b.url}/v1/estimate", json={"model": "standard", "messages": SHORT}).json()
        learned = {c["model"]: c["expected_output_tokens"] for c in plan["candidates"]}
        if learned["cheap"] != 64 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    # Learned on A, used by B: 33 tokens against a general prompt's base of 256 made "cheap" terse;
    # for B's short prompt (base 64) that is the most a model can be below its prior, half: 32.
    assert learned["cheap"] == 32
    assert httpx.get(f"{b.url}/readyz").status_code == 200


def test_routing_survives_redis_going_away(upstream: FakeUpstreamThread, tmp_path: Any) -> None:

    from conftest import free_port, start_redis_server

    port = free_port()
    proc = start_redis_server(port)
    try:
        config: dict[str, Any] = {**routing_config(upstream), "redis_url": f"redis://127.0.0.1:{port}/0"}
        config["tiers"] = {"premium": {"min_quality": 88}}
        config["routing"] = {**config.get("routing", {}), "shared_state_refresh_s": 0}  # every request asks Redis
        gw = Gateway(config)
        try:
            assert gw.client().chat.completions.create(model="premium", messages=SHORT).choices
            proc.kill()
            proc.wait(5)
            raw = gw.client().chat.completions.with_raw_response.create(model="premium", messages=SHORT)
            assert raw.headers["x-gateway-model"] == "smart"  # routed on this process's memory
            ready = httpx.get(f"{gw.url}/readyz")
            assert ready.status_code == 503 and "redis" in ready.text
            assert "Redis unavailable" in gw.logs()
        finally:
            gw.stop()
    finally:
        proc.kill()
        proc.wait(5)
