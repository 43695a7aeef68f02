"""OpenAI Chat Completions wire format (``POST /v1/chat/completions``) for the fake upstream."""

from __future__ import annotations

import time
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import orjson
from aiohttp import web

from gateway.fake_upstream.behaviour import ToolCall, Turn, count_input_tokens, pause
from gateway.fake_upstream.faults import run_faults

PATH = "/v1/chat/completions"
_JSON = "application/json"
_DONE = b"data: [DONE]\n\n"
_BROKEN = b"data: {broken\n\n"

# fault -> (status, error type, error code, default message)
_FAULT_ERRORS: Mapping[str, tuple[int, str, str | None, str]] = MappingProxyType({
    "400": (400, "invalid_request_error", None, "Invalid request (simulated upstream fault)."),
    "401": (401, "invalid_request_error", "invalid_api_key", "Incorrect API key provided: "),
    "429": (429, "requests", "rate_limit_exceeded", "Rate limit reached for requests (simulated)."),
    "500": (500, "server_error", None, "The server had an error while processing your request."),
    "503": (503, "server_error", "overloaded", "The engine is currently overloaded, please try again later."),
})


def error_response(
    status: int,
    etype: str,
    message: str,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    body = {"error": {"message": message, "type": etype, "param": None, "code": code}}
    return web.Response(status=status, body=orjson.dumps(body), content_type=_JSON, headers=headers)


def check_request(headers: dict[str, str], body: Any) -> web.Response | None:
    """Auth/shape validation; returns an error response or None when the request is acceptable."""
    auth = headers.get("authorization", "")
    if not auth.startswith("Bearer ") or not auth[7:].strip():
        return error_response(
            401, "invalid_request_error", "You didn't provide an API key (Authorization: Bearer).", None
        )
    if not isinstance(body, dict) or not isinstance(body.get("model"), str):
        return error_response(400, "invalid_request_error", "'model' is a required string property.")
    if not isinstance(body.get("messages"), list):
        return error_response(400, "invalid_request_error", "'messages' is a required array property.")
    return None


def fault_response(turn: Turn) -> web.Response:
    fault = turn.fault or "500"
    status, etype, code, message = _FAULT_ERRORS[fault]
    b = turn.behaviour
    if fault == "401":
        auth = turn.record["headers"].get("authorization", "")
        message += auth[7:] if auth.startswith("Bearer ") else auth
    elif b.error_message is not None:
        message = b.error_message
    headers = {"retry-after": b.retry_after} if b.retry_after and fault in ("429", "503") else None
    return error_response(status, etype, message, code, headers)


def _choices(body: dict[str, Any]) -> int:
    """`n` of a non-streamed request (a stream always has one choice here)."""
    n = body.get("n")
    return n if isinstance(n, int) and n > 1 and not body.get("stream") else 1


def _usage(turn: Turn) -> dict[str, Any]:
    if turn.behaviour.usage is not None:
        return turn.behaviour.usage
    n_in = count_input_tokens(turn.body)
    n_out = turn.plan.n_words * _choices(turn.body)  # every choice is written, and billed
    return {
        "prompt_tokens": n_in,
        "completion_tokens": n_out,
        "total_tokens": n_in + n_out,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


def _tool_call(i: int, tc: ToolCall) -> dict[str, Any]:
    return {"id": f"call_{i}", "type": "function", "function": {"name": tc.name, "arguments": tc.arguments}}


async def respond(request: web.Request, turn: Turn) -> web.StreamResponse | None:
    """Answer one chat completion; None means the connection was deliberately dropped."""
    handled, answer = await run_faults(request, turn, fault_response, _stream)
    if handled:
        return answer
    plan = turn.plan
    message: dict[str, Any] = {"role": "assistant", "content": plan.text}
    if plan.tools:
        message["tool_calls"] = [_tool_call(i, tc) for i, tc in enumerate(plan.tools)]
    out: dict[str, Any] = {
        "id": f"chatcmpl-fake-{turn.seq}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": turn.model,
        "choices": [{"index": i, "message": message, "finish_reason": plan.finish_reason, "logprobs": None}
                    for i in range(_choices(turn.body))],
    }
    if not turn.behaviour.omit_usage:
        out["usage"] = _usage(turn)
    out["service_tier"] = turn.behaviour.reported_tier(turn.body)
    out["system_fingerprint"] = "fp_fake"
    return web.Response(body=orjson.dumps(out), content_type=_JSON)


def _deltas(turn: Turn) -> list[dict[str, Any]]:
    """Content deltas: one per reply word, then per tool call a header delta and argument fragments."""
    deltas: list[dict[str, Any]] = [{"content": p} for p in turn.plan.pieces]
    for i, tc in enumerate(turn.plan.tools):
        head = {
            "index": i,
            "id": f"call_{i}",
            "type": "function",
            "function": {"name": tc.name, "arguments": ""},
        }
        deltas.append({"tool_calls": [head]})
        for piece in tc.arg_pieces():
            deltas.append({"tool_calls": [{"index": i, "function": {"arguments": piece}}]})
    return deltas


async def _stream(request: web.Request, turn: Turn) -> web.StreamResponse | None:
    b = turn.behaviour
    record = turn.record
    opts = turn.body.get("stream_options")
    include_usage = isinstance(opts, dict) and opts.get("include_usage") is True
    base: dict[str, Any] = {
        "id": f"chatcmpl-fake-{turn.seq}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": turn.model,
        "service_tier": b.reported_tier(turn.body),
        "system_fingerprint": "fp_fake",
    }

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        obj = {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
        if include_usage:
            obj["usage"] = None
        return b"data: " + orjson.dumps(obj) + b"\n\n"

    async def send(data: bytes) -> None:
        await resp.write(data)
        record["chunks_sent"] += 1

    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await resp.prepare(request)
    await pause(b.ttft_ms)
    deltas = _deltas(turn)
    if turn.fault == "malformed":
        first = {"role": "assistant", **(deltas[0] if deltas else {"content": ""})}
        await send(chunk(first))
        await send(_BROKEN)
        await send(_DONE)
        await resp.write_eof()
        return resp
    await send(chunk({"role": "assistant", "content": ""}))
    stop_at = b.drop_after if turn.fault in ("drop", "error_event") else None
    for i, delta in enumerate(deltas):
        if stop_at is not None and i >= stop_at:
            break
        if i:
            await pause(b.itl_ms)
        await send(chunk(delta))
    if turn.fault == "drop":
        if request.transport is not None:
            request.transport.abort()
        return None
    if turn.fault == "error_event":
        message = b.error_message or "upstream exploded"
        await send(b"data: " + orjson.dumps({"error": {"message": message, "type": "server_error"}}) + b"\n\n")
        await resp.write_eof()
        return resp
    await send(chunk({}, turn.plan.finish_reason))
    if include_usage and not b.omit_usage:
        await send(b"data: " + orjson.dumps({**base, "choices": [], "usage": _usage(turn)}) + b"\n\n")
    await send(_DONE)
    await resp.write_eof()
    return resp
