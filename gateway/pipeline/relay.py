"""Relay an upstream stream to the client as SSE, chunk by chunk, never buffered.

The usage chunk is priced and forwarded only if the client asked for it. A failure after the
first byte is sent as one `data: {"error": ...}` event, then the stream ends. If the client
goes away, the upstream request is aborted and what was produced is still priced and counted.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from time import perf_counter

import orjson

from gateway.api.sse_response import SSEResponse
from gateway.cache.response_cache import assemble, store
from gateway.errors import GatewayError, UpstreamError
from gateway.pipeline.exchange import Call
from gateway.pipeline.settle import Settled, settle
from gateway.providers.base import Provider, UpstreamStream
from gateway.providers.errors import redact

__all__ = ["start_stream"]

_DONE = b"data: [DONE]\n\n"


async def start_stream(call: Call, provider: Provider, deadline: float | None = None) -> SSEResponse:
    assert call.spec is not None
    options = call.body.get("stream_options") or {}
    include_usage = bool(options.get("include_usage"))
    call.upstream_started = perf_counter()
    stream = await provider.stream(call.spec, call.body, deadline)  # refusals here are plain JSON errors
    return SSEResponse(_relay(call, stream, include_usage), call.headers())


def _usage_chunk(call: Call, stream: UpstreamStream, settled: Settled) -> bytes:
    chunk = dict(stream.usage_chunk or {})
    chunk.setdefault("id", f"chatcmpl-{call.request_id}")
    chunk.setdefault("object", "chat.completion.chunk")
    chunk.setdefault("created", int(time.time()))
    chunk.setdefault("model", call.body["model"])
    chunk["choices"] = []
    chunk["usage"] = settled.client_usage()
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


async def _relay(call: Call, stream: UpstreamStream, include_usage: bool) -> AsyncGenerator[bytes, None]:
    spec = call.spec
    assert spec is not None
    settled: Settled | None = None
    status, reason = "499", "disconnect"  # until the stream ends one way or another
    upstream_done = 0.0
    relayed: list[bytes] | None = [] if call.cache_key and call.cache_write else None
    try:
        async for events in stream:
            if relayed is not None:
                relayed.append(events)
            yield events
        upstream_done = perf_counter()
        if not stream.finished:
            raise UpstreamError(
                f"upstream {spec.provider} stream ended early for model '{spec.name}'", kind="connection"
            )
        settled = settle(call, stream.usage, stream.usage_dict, stream.produced_text, "missing")
        if include_usage:
            yield _usage_chunk(call, stream, settled)
        yield _DONE
        status = "200"
        completion = assemble(relayed) if relayed is not None else None
        if completion is not None:  # complete and successful: worth caching
            store(call, {**completion, "usage": settled.client_usage()}, settled.cost)
    except GatewayError as exc:
        status, reason = str(exc.status_code), "error"
        call.upstream_failed(exc)
        exc.message = redact(exc.message, call.state.secrets)
        yield b"data: " + exc.body_bytes() + b"\n\n"
    finally:
        stream.close()
        if settled is None:  # failed or abandoned: price what was produced
            settle(call, stream.usage, stream.usage_dict, stream.produced_text, reason, complete=False, status=status)
        if stream.first_chunk_at is not None:
            metrics = call.state.metrics
            metrics.child(metrics.ttft, spec.name).observe(stream.first_chunk_at - call.upstream_started)
        waited = (upstream_done or perf_counter()) - call.upstream_started
        call.record(status, waited)
