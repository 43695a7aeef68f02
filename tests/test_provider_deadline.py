"""The routing deadline at the adapters: one that has passed is a timeout before anything is sent
upstream; one that is near cuts the model's own timeout short."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from gateway.errors import UpstreamTimeout
from gateway.fake_upstream import FakeUpstreamThread
from gateway.pricing import Price, Rates
from gateway.providers.registry import build_providers
from gateway.settings import ModelSpec
from gateway.upstream_http import UpstreamPool

BODY = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}


def _spec(upstream: FakeUpstreamThread, wire: str, name: str) -> ModelSpec:
    base = upstream.url + ("" if wire == "anthropic" else "/v1")
    provider = "openai" if wire == "litellm" else wire
    return ModelSpec(name=name, provider=provider, wire=wire, upstream_model=name, api_base=base,
                     api_key="sk-test", price=Price(Rates(1, 1, 1, 1, 2, 2)), timeout_s=30)


async def _call(spec: ModelSpec, stream: bool, deadline: float) -> Any:
    pool = UpstreamPool()
    provider = build_providers(pool)[spec.wire]
    body = {**BODY, "model": spec.upstream_model}
    try:
        if stream:
            return await provider.stream(spec, body, deadline)
        return await provider.complete(spec, body, deadline)
    finally:
        pool.close()


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
@pytest.mark.parametrize("wire", ["openai", "anthropic", "litellm"])
def test_a_passed_deadline_sends_nothing_upstream(upstream: FakeUpstreamThread, wire: str, stream: bool) -> None:
    spec = _spec(upstream, wire, f"dl-passed-{wire}")

    async def main() -> None:
        with pytest.raises(UpstreamTimeout):
            await _call(spec, stream, asyncio.get_running_loop().time() - 0.01)

    asyncio.run(main())
    assert upstream.calls(spec.upstream_model) == []


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
@pytest.mark.parametrize("wire", ["openai", "anthropic"])
def test_a_near_deadline_cuts_the_model_timeout(upstream: FakeUpstreamThread, wire: str, stream: bool) -> None:
    spec = _spec(upstream, wire, f"dl-near-{wire}")
    upstream.script(spec.upstream_model, {"latency_ms": 3000})

    async def main() -> float:
        started = time.monotonic()
        with pytest.raises(UpstreamTimeout):
            await _call(spec, stream, asyncio.get_running_loop().time() + 0.3)
        return time.monotonic() - started

    took = asyncio.run(main())
    assert 0.29 <= took < 1.5  # the deadline's 0.3 s, not the model's 30 s nor the 3 s answer
    assert len(upstream.calls(spec.upstream_model)) == 1
