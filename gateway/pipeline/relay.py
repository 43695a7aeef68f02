"""Relay an upstream stream to the client, event batch by event batch, never buffered.

It yields the upstream's SSE-framed chat.completion.chunk events as they arrive; when the
stream completed, the settled usage as a `StreamEnd`; when it failed after it started, the
`GatewayError` (redacted). If the client goes away (the consumer closes this generator), the
upstream request is aborted and what was produced is still priced and counted.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from time import perf_counter
from typing import Any

from gateway.cache.response_cache import ResponseCache, assemble
from gateway.errors import GatewayError, UpstreamError
from gateway.pipeline.exchange import Attempt, Exchange, StreamEnd, StreamEvent
from gateway.pipeline.settle import Books, Settled
from gateway.providers.base import UpstreamStream
from gateway.redaction import Redactor

__all__ = ["relay"]


def _end(exchange: Exchange[Any], attempt: Attempt, stream: UpstreamStream, settled: Settled) -> StreamEnd:
    usage = settled.client_usage()
    chunk = dict(stream.usage_chunk or {})
    chunk.setdefault("id", f"chatcmpl-{exchange.caller.request_id}")
    chunk.setdefault("object", "chat.completion.chunk")
    chunk.setdefault("created", int(time.time()))
    chunk.setdefault("model", attempt.spec.upstream_model)
    chunk["choices"] = []
    chunk["usage"] = usage
    return StreamEnd(usage, chunk)


async def relay(
    exchange: Exchange[Any], attempt: Attempt, stream: UpstreamStream, books: Books, responses: ResponseCache,
    redact: Redactor,
) -> AsyncGenerator[StreamEvent, None]:
    spec = attempt.spec
    settled: Settled | None = None
    status, reason = "499", "disconnect"  # until the stream ends one way or another
    upstream_done = 0.0
    keep = attempt.cache_key is not None and exchange.request.cache.write
    relayed: list[bytes] | None = [] if keep else None
    try:
        async for events in stream:
            if relayed is not None:
                relayed.append(events)
            yield events
        upstream_done = perf_counter()
        if not stream.finished:
            raise UpstreamError(f"upstream {spec.provider} stream ended early for model '{spec.name}'",
                                kind="connection")
        settled = books.settle(exchange, attempt, stream, "missing")
        # (a native stream's held-back last event, for the API layer to send with the cost)
        yield StreamEnd(settled.client_usage(), dict(stream.usage_chunk or {})) if attempt.native else \
            _end(exchange, attempt, stream, settled)
        status = "200"
        completion = assemble(relayed) if relayed is not None else None
        if completion is not None:  # complete and successful: worth caching
            responses.store(attempt.cache_key, {**completion, "usage": settled.client_usage()}, settled.cost)
    except GatewayError as exc:
        status, reason = str(exc.status_code), "error"
        books.upstream_failed(exchange, exc)
        exc.message = redact(exc.message)
        yield exc
    finally:
        stream.close()
        if settled is None:  # failed or abandoned: price what was produced
            books.settle(exchange, attempt, stream, reason, complete=False, status=status)
        if stream.first_chunk_at is not None:
            metrics = books.metrics
            metrics.child(metrics.ttft, spec.name).observe(stream.first_chunk_at - attempt.started)
        books.finished(exchange, status, (upstream_done or perf_counter()) - attempt.started)
