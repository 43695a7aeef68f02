"""Anthropic Messages wire format (``POST /v1/messages``) for the fake upstream."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import orjson
from aiohttp import web

from gateway.fake_upstream.behaviour import ToolCall, Turn, count_input_tokens, pause
from gateway.fake_upstream.faults import run_faults

PATH = "/v1/messages"
_JSON = "application/json"
_STOP_REASONS = MappingProxyType({"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"})

# fault -> (status, error type, default message)
_FAULT_ERRORS: Mapping[str, tuple[int, str, str]] = MappingProxyType({
    "400": (400, "invalid_request_error", "Invalid request (simulated upstream fault)."),
    "401": (401, "authentication_error", "Incorrect API key provided: "),
    "429": (429, "rate_limit_error", "Number of requests has exceeded your rate limit (simulated)."),
    "500": (500, "api_error", "Internal server error (simulated)."),
    "503": (503, "overloaded_error", "Overloaded"),
})


def error_response(status: int, etype: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    body = {"type": "error", "error": {"type": etype, "message": message}}
    return web.Response(status=status, body=orjson.dumps(body), content_type=_JSON, headers=headers)


def check_request(headers: dict[str, str], body: Any) -> web.Response | None:
    """Auth/shape validation; returns an error response or None when the request is acceptable."""
    if not headers.get("x-api-key"):
        return error_response(401, "authentication_error", "x-api-key header is required")
    if not headers.get("anthropic-version"):
        return error_response(400, "invalid_request_error", "anthropic-version: header is required")
    if not isinstance(body, dict) or not isinstance(body.get("model"), str):
        return error_response(400, "invalid_request_error", "model: Field required")
    if not isinstance(body.get("messages"), list):
        return error_response(400, "invalid_request_error", "messages: Field required")
    max_tokens = body.get("max_tokens")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
        return error_response(400, "invalid_request_error", "max_tokens: Field required")
    problem = _tool_choice_problem(body) or (_thinking_problem(body, max_tokens) if _thinking(body) else None)
    return error_response(400, "invalid_request_error", problem) if problem else None


def _thinking(body: dict[str, Any]) -> bool:
    thinking = body.get("thinking")
    return isinstance(thinking, dict) and thinking.get("type") == "enabled"


def _thinking_problem(body: dict[str, Any], max_tokens: int) -> str | None:
    """What Anthropic refuses with extended thinking on."""
    budget = body["thinking"].get("budget_tokens")
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1024:
        return "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024"
    if max_tokens <= budget:
        return "`max_tokens` must be greater than `thinking.budget_tokens`"
    if body.get("temperature") is not None and body["temperature"] != 1:
        return "`temperature` may only be set to 1 when thinking is enabled"
    if body.get("top_k") is not None:
        return "`top_k` must be unset when thinking is enabled"
    if (body.get("tool_choice") or {}).get("type") in ("any", "tool"):
        return "Thinking may not be enabled when tool_choice forces tool use."
    return None


def _tool_choice_problem(body: dict[str, Any]) -> str | None:
    choice = body.get("tool_choice")
    if choice is None:
        return None
    names = [t.get("name") for t in body.get("tools") or () if isinstance(t, dict)]
    if not isinstance(choice, dict) or choice.get("type") not in ("auto", "any", "tool", "none"):
        return "tool_choice: Input tag does not match any of the expected tags: 'auto', 'any', 'tool', 'none'"
    if choice["type"] == "tool" and choice.get("name") not in names:
        return f"tool_choice.name: tool '{choice.get('name')}' is not in tools"
    if choice["type"] == "none" and len(choice) > 1:
        return "tool_choice.none: Extra inputs are not permitted"
    return None


def fault_response(turn: Turn) -> web.Response:
    fault = turn.fault or "500"
    status, etype, message = _FAULT_ERRORS[fault]
    b = turn.behaviour
    if fault == "401":
        hdrs = turn.record["headers"]
        message += hdrs.get("x-api-key") or hdrs.get("authorization", "")
    elif b.error_message is not None:
        message = b.error_message
    headers = {"retry-after": b.retry_after} if b.retry_after and fault in ("429", "503") else None
    return error_response(status, etype, message, headers)


def _usage(turn: Turn) -> dict[str, Any]:
    if turn.behaviour.usage is not None:
        return turn.behaviour.usage
    return {
        "input_tokens": count_input_tokens(turn.body, include_system=True),
        "output_tokens": turn.plan.n_words,
        "cache_read_input_tokens": 0,
        "cache_creation_input_tokens": 0,
    }


def _stop_reason(turn: Turn) -> str:
    if _forced(turn) is not None:
        return "tool_use"
    reason = turn.plan.finish_reason
    return _STOP_REASONS.get(reason, reason)


def _forced(turn: Turn) -> ToolCall | None:
    """A tool forced by `tool_choice` and no scripted tool calls: it is called, with the scripted
    reply as its input when that is a JSON object (else `{}`), and no text."""
    choice = turn.body.get("tool_choice")
    if turn.plan.tools or not isinstance(choice, dict) or choice.get("type") != "tool":
        return None
    text = turn.plan.text or ""
    try:
        is_object = isinstance(orjson.loads(text), dict)
    except orjson.JSONDecodeError:
        is_object = False
    return ToolCall(str(choice.get("name")), text if is_object else "{}")


def _answer(turn: Turn) -> tuple[str | None, tuple[ToolCall, ...]]:
    """The text (None: no text block) and the tool calls of the answer."""
    forced = _forced(turn)
    return (None, (forced,)) if forced is not None else (turn.plan.text, turn.plan.tools)


def _thinking_text(turn: Turn) -> str | None:
    """With thinking on, the answer starts with this thinking block's text."""
    if not _thinking(turn.body):
        return None
    return f"Thinking within {turn.body['thinking'].get('budget_tokens')} tokens."


THINKING_SIGNATURE = "fake-signature"


def _tool_input(tc: ToolCall) -> Any:
    try:
        return orjson.loads(tc.arguments) if tc.arguments else {}
    except orjson.JSONDecodeError:
        return {}


def _event(etype: str, data: dict[str, Any]) -> bytes:
    return b"event: " + etype.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


async def respond(request: web.Request, turn: Turn) -> web.StreamResponse | None:
    """Answer one Messages request; None means the connection was deliberately dropped."""
    handled, answer = await run_faults(request, turn, fault_response, _stream)
    if handled:
        return answer
    text, tools = _answer(turn)
    content: list[dict[str, Any]] = []
    thinking = _thinking_text(turn)
    if thinking is not None:
        content.append({"type": "thinking", "thinking": thinking, "signature": THINKING_SIGNATURE})
    if text is not None:
        content.append({"type": "text", "text": text})
    for i, tc in enumerate(tools):
        content.append({"type": "tool_use", "id": f"toolu_fake_{i}", "name": tc.name, "input": _tool_input(tc)})
    out: dict[str, Any] = {
        "id": f"msg_fake_{turn.seq}",
        "type": "message",
        "role": "assistant",
        "model": turn.model,
        "content": content,
        "stop_reason": _stop_reason(turn),
        "stop_sequence": None,
    }
    if not turn.behaviour.omit_usage:
        out["usage"] = _usage(turn)
    return web.Response(body=orjson.dumps(out), content_type=_JSON)


def _start(index: int, block: dict[str, Any]) -> tuple[bool, bytes]:
    return False, _event("content_block_start", {"type": "content_block_start", "index": index, "content_block": block})


def _delta(index: int, delta: dict[str, Any]) -> tuple[bool, bytes]:
    return True, _event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})


def _stop(index: int) -> tuple[bool, bytes]:
    return False, _event("content_block_stop", {"type": "content_block_stop", "index": index})


_PING = (False, _event("ping", {"type": "ping"}))


def _events(turn: Turn) -> list[tuple[bool, bytes]]:
    """The content part of the stream as (is_content_delta, frame) pairs (after message_start)."""
    text, tools = _answer(turn)
    events: list[tuple[bool, bytes]] = []
    index = 0
    thinking = _thinking_text(turn)
    if thinking is not None:
        events += [_start(0, {"type": "thinking", "thinking": ""}), _delta(0, {"type": "thinking_delta",
                   "thinking": thinking}), _delta(0, {"type": "signature_delta", "signature": THINKING_SIGNATURE}),
                   _stop(0)]
        index = 1
    if text is not None:
        events += [_start(index, {"type": "text", "text": ""}), _PING]
        events += [_delta(index, {"type": "text_delta", "text": piece}) for piece in turn.plan.pieces]
        events.append(_stop(index))
        index += 1
    else:
        events.append(_PING)
    for i, tc in enumerate(tools):
        events.append(_start(index, {"type": "tool_use", "id": f"toolu_fake_{i}", "name": tc.name, "input": {}}))
        events += [_delta(index, {"type": "input_json_delta", "partial_json": p}) for p in tc.arg_pieces()]
        events.append(_stop(index))
        index += 1
    return events


async def _stream(request: web.Request, turn: Turn) -> web.StreamResponse | None:
    b = turn.behaviour
    record = turn.record

    async def send(data: bytes) -> None:
        await resp.write(data)
        record["chunks_sent"] += 1

    usage = None if b.omit_usage else _usage(turn)
    message: dict[str, Any] = {
        "id": f"msg_fake_{turn.seq}",
        "type": "message",
        "role": "assistant",
        "model": turn.model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
    }
    if usage is not None:
        message["usage"] = {**usage, "output_tokens": 1}
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await resp.prepare(request)
    await send(_event("message_start", {"type": "message_start", "message": message}))
    stop_at = b.drop_after if turn.fault in ("drop", "error_event") else None
    if turn.fault == "malformed":
        stop_at = 1
    n_content = 0
    for is_content, frame in _events(turn):
        if is_content:
            if stop_at is not None and n_content >= stop_at:
                break
            await pause(b.ttft_ms if n_content == 0 else b.itl_ms)
            n_content += 1
        await send(frame)
    if turn.fault == "drop":
        if request.transport is not None:
            request.transport.abort()
        return None
    if turn.fault == "malformed":
        await send(b"event: content_block_delta\ndata: {broken\n\n")
        await resp.write_eof()
        return resp
    if turn.fault == "error_event":
        err = {
            "type": "error",
            "error": {"type": "overloaded_error", "message": b.error_message or "Overloaded"},
        }
        await send(_event("error", err))
        await resp.write_eof()
        return resp
    delta: dict[str, Any] = {
        "type": "message_delta",
        "delta": {"stop_reason": _stop_reason(turn), "stop_sequence": None},
    }
    if usage is not None:
        delta["usage"] = {"output_tokens": usage.get("output_tokens", turn.plan.n_words)}
    await send(_event("message_delta", delta))
    await send(_event("message_stop", {"type": "message_stop"}))
    await resp.write_eof()
    return resp
