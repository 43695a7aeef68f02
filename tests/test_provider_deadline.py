"""The routing deadline at the adapters: one that has passed is a timeout before anything is sent
upstream; one that is near cuts the model's own timeout short."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from gateway.config.settings import ModelSpec
from gateway.errors import DeadlineExceeded, GatewayError, InvalidRequest, RateLimited, UpstreamTimeout
from gateway.fake_upstream import FakeUpstreamThread
from gateway.money.pricing import Price, Rates
from gateway.providers.litellm_provider import load_litellm
from gateway.providers.registry import build_providers
from gateway.providers.upstream_http import UpstreamPool

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


async def _stalled_error_server(status: int, release: asyncio.Event) -> tuple[asyncio.Server, str]:
    """A real HTTP server that sends an error's head and the start of its body, then stalls until
    `release` is set."""
    reason = {400: "Bad Request", 429: "Too Many Requests"}[status]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(f"HTTP/1.1 {status} {reason}\r\nretry-after: 7\r\ncontent-type: application/json\r\n"
                     "content-length: 100\r\n\r\n{\"error\": ".encode())
        await writer.drain()
        await release.wait()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
@pytest.mark.parametrize("wire", ["openai", "anthropic"])
@pytest.mark.parametrize("status", [400, 429])
def test_an_error_whose_body_is_too_slow_keeps_its_status(wire: str, stream: bool, status: int) -> None:
    async def main() -> tuple[GatewayError, float]:
        release = asyncio.Event()
        server, base = await _stalled_error_server(status, release)
        spec = ModelSpec(name=f"dl-slow-{status}", provider=wire, wire=wire, upstream_model="m",
                         api_base=base + ("" if wire == "anthropic" else "/v1"), api_key="sk-test",
                         price=Price(Rates(1, 1, 1, 1, 2, 2)), timeout_s=30)
        started = time.monotonic()
        try:
            with pytest.raises(GatewayError) as info:
                await _call(spec, stream, asyncio.get_running_loop().time() + 0.3)
            return info.value, time.monotonic() - started
        finally:
            release.set()
            server.close()
            await server.wait_closed()

    error, took = asyncio.run(main())
    assert 0.29 <= took < 1.5
    if status == 429:  # still the model's rate limit, with its retry-after (it cools the model)
        assert isinstance(error, RateLimited) and error.headers == {"retry-after": "7"}
    else:  # still the client's fault: not retried on another model
        assert isinstance(error, InvalidRequest) and error.status_code == 400


def test_a_passed_deadline_is_no_models_failure(upstream: FakeUpstreamThread) -> None:
    spec = _spec(upstream, "openai", "dl-passed-kind")

    async def main() -> None:
        with pytest.raises(DeadlineExceeded) as info:
            await _call(spec, False, asyncio.get_running_loop().time() - 0.01)
        assert info.value.status_code == 504 and info.value.kind is None  # no upstream-error metric

    asyncio.run(main())


def test_an_open_litellm_stream_waits_the_models_timeout_between_chunks(upstream: FakeUpstreamThread) -> None:
    """The deadline bounds opening the stream; after that, as on the HTTP adapters, the model's
    own timeout_s bounds each wait for the next chunk (0.4 s apart here, 0.3 s deadline)."""
    spec = _spec(upstream, "litellm", "dl-itl-litellm")
    upstream.script(spec.upstream_model, {"output_tokens": 3, "ttft_ms": 0, "itl_ms": 400})
    load_litellm()  # its import (seconds) and its first stream (more imports, its clients) are not
    asyncio.run(_call(_spec(upstream, "litellm", "dl-itl-warm"), True, None))  # what this test times

    async def main() -> tuple[int, bool, str]:
        stream = await _call(spec, True, asyncio.get_running_loop().time() + 0.3)
        events = [event async for event in stream]
        return len(events), stream.finished, stream.produced_text()

    events, finished, text = asyncio.run(main())
    assert finished and text == "tok0 tok1 tok2" and events >= 3  # litellm adds role and finish chunks
