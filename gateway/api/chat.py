"""POST /v1/chat/completions: decode the request, run it through the pipeline, encode the answer
(JSON, or an SSE stream) in OpenAI's chat format. Never raises: failures become OpenAI-shaped
error responses here."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from time import perf_counter

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway.api.body import gateway_headers, read_body, request_id
from gateway.api.errors import error_response, unexpected_error
from gateway.api.sse_response import SSEResponse, completion_chunks
from gateway.errors import GatewayError
from gateway.pipeline.exchange import Answer, Caller, Stream, StreamEnd, StreamEvent
from gateway.pipeline.request import parse_chat_request
from gateway.state import AppState

__all__ = ["PATH", "chat_completions"]

PATH = "/v1/chat/completions"
_DONE = b"data: [DONE]\n\n"


async def chat_completions(request: Request) -> Response | SSEResponse:
    """Dispatched by `gateway.api.asgi.GatewayASGI` (not a FastAPI route, to keep the
    framework's per-request cost off the hot path)."""
    state: AppState = request.app.state.gw
    arrived = perf_counter()
    rid = request.state.request_id = request_id(request)
    headers, settings = request.headers, state.settings
    authorization = headers.get("authorization") or ""
    try:
        grant = await state.access.authenticate(authorization)
        raw = await read_body(request, settings.max_body_bytes)
        chat = parse_chat_request(raw, *gateway_headers(request))
    except GatewayError as exc:  # refused before the pipeline saw it
        state.metrics.child(state.metrics.requests, "none", "", str(exc.status_code)).inc()
        return error_response(rid, exc, state.redact)
    try:
        outcome = await state.pipeline.run(chat, Caller(rid, grant, authorization, arrived))
    except GatewayError as exc:
        return error_response(rid, exc, state.redact)
    except Exception as exc:
        return error_response(rid, unexpected_error(state.errors, PATH, exc), state.redact)
    if isinstance(outcome, Stream):
        return SSEResponse(_sse(outcome.events, chat.include_usage), outcome.headers)
    if chat.stream:  # a response-cache hit, replayed as the stream that was asked for
        return SSEResponse(_replay(outcome, chat.include_usage), outcome.headers)
    outcome.headers["x-gateway-cost-usd"] = outcome.cost.header_value()
    return Response(orjson.dumps(outcome.body), media_type="application/json", headers=outcome.headers)


async def _sse(events: AsyncGenerator[StreamEvent, None], include_usage: bool) -> AsyncGenerator[bytes, None]:
    """The pipeline's stream in OpenAI's SSE format: the usage chunk only if the client asked."""
    try:
        async for event in events:
            if event.__class__ is bytes:
                yield event
            elif isinstance(event, StreamEnd):
                yield (b"data: " + orjson.dumps(event.chunk) + b"\n\n" + _DONE) if include_usage else _DONE
            else:  # failed after the stream started: one error event, and no [DONE]
                assert isinstance(event, GatewayError)
                yield b"data: " + event.body_bytes() + b"\n\n"
    finally:
        await events.aclose()  # the client left: the pipeline settles what was produced, now


async def _replay(answer: Answer, include_usage: bool) -> AsyncGenerator[bytes, None]:
    body = answer.body
    events = completion_chunks(body)
    if include_usage:
        usage = {"id": body.get("id"), "object": "chat.completion.chunk", "created": int(time.time()),
                 "model": body.get("model"), "choices": [], "usage": body["usage"]}
        events += b"data: " + orjson.dumps(usage) + b"\n\n"
    yield events + _DONE
