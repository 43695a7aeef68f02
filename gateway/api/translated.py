"""The client APIs served by translation (`/v1/messages`, `/v1/responses`): decode the API's
request, translate it to the pipeline's chat form (`gateway/formats/`), run it through the same
pipeline as a chat request (keys, budgets, limits, routing, caches, ledger, metrics, one pricing
core), and encode the answer, the stream or the failure in the API's own shapes. Never raises.

Each API is a `Codec` class: built per request from the decoded body, it knows how to translate
that request and its answer; its `error_body` renders any failure in the API's error shape.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator
from time import perf_counter
from typing import Any, Protocol

import orjson
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response

from gateway.api.body import gateway_headers, read_body, request_id
from gateway.api.errors import unexpected_error
from gateway.api.sse_response import SSEResponse, completion_chunks
from gateway.errors import GatewayError
from gateway.formats.native import native_out
from gateway.pipeline.exchange import Answer, Caller, Stream, StreamEnd, StreamEvent
from gateway.pipeline.request import Native, chat_request, decode_object
from gateway.state import AppState

__all__ = ["Codec", "CodecType", "NativeOut", "StreamCodec", "credential", "error_response", "serve"]

log = logging.getLogger("gateway.requests")


class StreamCodec(Protocol):
    """Turns the pipeline's chat stream into the API's events, as they arrive."""

    def feed(self, events: bytes) -> bytes: ...

    def end(self, usage: dict[str, Any]) -> bytes: ...

    def error(self, exc: GatewayError) -> bytes: ...


class NativeOut(Protocol):
    """Relays a provider's own events (the client's API): the held-back last one with the cost."""

    response: dict[str, Any] | None  # the completed answer, when the API keeps it

    def feed(self, events: bytes) -> bytes: ...

    def finish(self, usage: dict[str, Any], held: dict[str, Any]) -> bytes: ...

    def error(self, exc: GatewayError) -> bytes: ...


class Codec(Protocol):
    """One request of one client API."""

    chat: dict[str, Any]  # the request in chat form
    native: Native | None  # the request as sent, for a model that serves this API itself

    def answer(self, completion: dict[str, Any]) -> dict[str, Any]:
        """A chat.completion (with its usage and cost) as the API's answer object."""
        ...

    def stream(self) -> StreamCodec: ...

    async def finished(self, state: AppState, answer: dict[str, Any], model: str, native: bool) -> None:
        """The request succeeded with `answer` (the API's object) from gateway model `model`
        (`native`: the provider's own answer): keep what the API keeps."""
        ...


class CodecType(Protocol):
    async def open(self, body: dict[str, Any], headers: Headers, state: AppState, caller: Caller) -> Codec:
        """The request's codec; raises a GatewayError for a request the API refuses."""
        ...

    @staticmethod
    def error_body(exc: GatewayError) -> bytes: ...


def credential(request: Request) -> str:
    """The caller's credential as an Authorization value: `Authorization`, else Anthropic's
    `x-api-key` (so the anthropic SDKs and Claude Code can send a gateway key either way)."""
    headers = request.headers
    authorization = headers.get("authorization")
    if authorization:
        return authorization
    key = headers.get("x-api-key")
    return f"Bearer {key}" if key else ""


def error_response(kind: CodecType, state: AppState, request_id: str, exc: GatewayError) -> Response:
    exc.message = state.redact(exc.message)
    headers = {"x-request-id": request_id, **exc.headers}
    if exc.status_code == 429 and exc.code == "budget_exceeded":
        headers["x-should-retry"] = "false"
    return Response(kind.error_body(exc), status_code=exc.status_code, media_type="application/json",
                    headers=headers)


async def serve(request: Request, kind: CodecType, path: str) -> Response | SSEResponse:
    state: AppState = request.app.state.gw
    arrived = perf_counter()
    rid = request.state.request_id = request_id(request)
    authorization = credential(request)
    try:
        grant = await state.access.authenticate(authorization)
        raw = await read_body(request, state.settings.max_body_bytes)
        caller = Caller(rid, grant, authorization, arrived)
        codec = await kind.open(decode_object(raw), request.headers, state, caller)
        options = gateway_headers(request)
        chat = chat_request(codec.chat, len(raw), options.cache, codec.native, options.defer)
    except GatewayError as exc:  # refused before the pipeline saw it
        state.metrics.child(state.metrics.requests, "none", "", str(exc.status_code)).inc()
        return error_response(kind, state, rid, exc)
    except Exception as exc:
        return error_response(kind, state, rid, unexpected_error(state.errors, path, exc))
    try:
        outcome = await state.pipeline.run(chat, caller)
    except GatewayError as exc:
        return error_response(kind, state, rid, exc)
    except Exception as exc:
        return error_response(kind, state, rid, unexpected_error(state.errors, path, exc))
    model = outcome.headers.get("x-gateway-model", "")
    if isinstance(outcome, Stream):
        events = _native(outcome.events, codec, state, model) if outcome.native else \
            _stream(outcome.events, codec, state, model)
        return SSEResponse(events, outcome.headers)
    if chat.stream:  # a response-cache hit, replayed as the stream that was asked for
        return SSEResponse(_replay(outcome, codec, state, model), outcome.headers)
    outcome.headers["x-gateway-cost-usd"] = outcome.cost.header_value()
    answer = outcome.body if outcome.native else codec.answer(outcome.body)
    try:
        await codec.finished(state, answer, model, outcome.native)
    except GatewayError as exc:
        return error_response(kind, state, rid, exc)
    return Response(orjson.dumps(answer), media_type="application/json", headers=outcome.headers)


async def _stream(events: AsyncGenerator[StreamEvent, None], codec: Codec, state: AppState, model: str,
                  ) -> AsyncGenerator[bytes, None]:
    out = codec.stream()
    try:
        async for event in events:
            if isinstance(event, bytes):
                piece = out.feed(event)
                if piece:
                    yield piece
            elif isinstance(event, StreamEnd):
                end = out.end(event.usage)
                await _finished(codec, state, out, model, False)  # kept before the client can ask for it
                yield end
            else:  # failed after the stream started
                yield out.error(event)
    finally:
        await events.aclose()  # the client left: the pipeline settles what was produced, now


async def _native(events: AsyncGenerator[StreamEvent, None], codec: Codec, state: AppState, model: str,
                  ) -> AsyncGenerator[bytes, None]:
    """A provider's own events, passed through; the last one with the cost."""
    assert codec.native is not None  # (only a request carried as sent is answered natively)
    out: NativeOut = native_out(codec.native.api)
    try:
        async for event in events:
            if isinstance(event, bytes):
                yield out.feed(event)
            elif isinstance(event, StreamEnd):
                end = out.finish(event.usage, event.chunk)
                await _finished(codec, state, out, model, True)  # kept before the client can ask for it
                yield end
            else:  # failed after the stream started
                yield out.error(event)
    finally:
        await events.aclose()


async def _replay(answer: Answer, codec: Codec, state: AppState, model: str) -> AsyncGenerator[bytes, None]:
    out = codec.stream()
    piece = out.feed(completion_chunks(answer.body)) + out.end(answer.body.get("usage") or {})
    await _finished(codec, state, out, model, False)
    yield piece


async def _finished(codec: Codec, state: AppState, out: StreamCodec | NativeOut, model: str, native: bool) -> None:
    """A stream ended well: its codec keeps what its API keeps (a failure to keep it is logged:
    the answer has been paid for and is on its way)."""
    completed = getattr(out, "response", None)
    if completed is None:
        return
    try:
        await codec.finished(state, completed, model, native)
    except GatewayError as exc:
        log.warning("could not keep the response: %s", exc.message)
