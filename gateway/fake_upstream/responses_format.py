"""OpenAI Responses wire format (``POST /v1/responses``) for the fake upstream.

The scripted reply becomes one ``message`` output item with one ``output_text`` part, the scripted
tool calls become ``function_call`` items after it. Streams follow the official event sequence
(``response.created`` ... ``response.completed``), framed ``event: <type>`` / ``data: <json>``.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from aiohttp import web

from gateway.fake_upstream.behaviour import ToolCall, Turn, pause
from gateway.fake_upstream.faults import run_faults
from gateway.fake_upstream.openai_format import error_response, fault_response

__all__ = ["PATH", "check_request", "count_input_tokens", "respond"]

PATH = "/v1/responses"
_JSON = "application/json"
_TEXT_PARTS = frozenset({"input_text", "output_text", "text"})
_BROKEN = b"event: response.output_text.delta\ndata: {broken\n\n"


def _echoed(body: dict[str, Any]) -> dict[str, Any]:
    """The request fields a Response object repeats, with what it reports for those the request left out."""
    out: dict[str, Any] = {
        "instructions": None,
        "max_output_tokens": None,
        "previous_response_id": None,
        "store": True,
        "reasoning": {"effort": None, "summary": None},
        "text": {"format": {"type": "text"}},
        "tools": [],
        "tool_choice": "auto",
        "parallel_tool_calls": True,
        "temperature": 1.0,
        "top_p": 1.0,
        "metadata": {},
        "truncation": "disabled",
        "user": None,
    }
    for key in out:
        if body.get(key) is not None:
            out[key] = body[key]
    return out


def check_request(headers: dict[str, str], body: Any) -> web.Response | None:
    """Auth/shape validation; returns an error response or None when the request is acceptable."""
    auth = headers.get("authorization", "")
    if not auth.startswith("Bearer ") or not auth[7:].strip():
        return error_response(401, "invalid_request_error", "You didn't provide an API key (Authorization: Bearer).")
    if not isinstance(body, dict) or not isinstance(body.get("model"), str):
        return error_response(400, "invalid_request_error", "'model' is a required string property.")
    if body.get("input") is not None and not isinstance(body["input"], str | list):
        return error_response(400, "invalid_request_error", "'input' must be a string or an array of items.")
    return None


def _words(content: Any) -> int:
    if isinstance(content, str):
        return len(content.split())
    n = 0
    if isinstance(content, list):
        for part in content:
            if isinstance(part, dict) and part.get("type", "input_text") in _TEXT_PARTS:
                text = part.get("text")
                n += len(text.split()) if isinstance(text, str) else 0
    return n


def count_input_tokens(body: dict[str, Any]) -> int:
    """The chat format's estimate (4 per message plus the words of its text), with ``instructions``
    counted as a system message, a string ``input`` as one user message, a ``function_call_output``
    as a tool message and any other item (function_call, reasoning, ...) as 4."""
    n = 0
    instructions = body.get("instructions")
    if isinstance(instructions, str):
        n += 4 + _words(instructions)
    items = body.get("input")
    if isinstance(items, str):
        return n + 4 + _words(items)
    for item in items if isinstance(items, list) else ():
        if isinstance(item, dict):
            kind = item.get("type", "message")
            text = item.get("content") if kind == "message" else item.get("output")
            n += 4 + (_words(text) if kind in ("message", "function_call_output") else 0)
    return n


def _usage(turn: Turn) -> dict[str, Any] | None:
    b = turn.behaviour
    if b.omit_usage:
        return None
    if b.usage is not None:
        return b.usage
    n_in, n_out = count_input_tokens(turn.body), turn.plan.n_words
    return {
        "input_tokens": n_in,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": n_out,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": n_in + n_out,
    }


def _incomplete(turn: Turn) -> bool:
    return turn.plan.finish_reason == "length"


def _message(turn: Turn, text: str | None) -> dict[str, Any]:
    """The message item; ``text`` None: as first announced (no content part yet)."""
    done = text is not None
    status = ("incomplete" if _incomplete(turn) else "completed") if done else "in_progress"
    content = [_text_part(text)] if text is not None else []
    return {"id": f"msg_{turn.seq}", "type": "message", "status": status, "role": "assistant", "content": content}


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _function_call(turn: Turn, i: int, tc: ToolCall, done: bool) -> dict[str, Any]:
    return {
        "id": f"fc_{turn.seq}_{i}",
        "type": "function_call",
        "status": "completed" if done else "in_progress",
        "call_id": f"call_{i}",
        "name": tc.name,
        "arguments": tc.arguments if done else "",
    }


def _output(turn: Turn) -> list[dict[str, Any]]:
    plan = turn.plan
    items = [_message(turn, plan.text)] if plan.text is not None else []
    return items + [_function_call(turn, i, tc, True) for i, tc in enumerate(plan.tools)]


def _response(turn: Turn, created_at: int, final: bool) -> dict[str, Any]:
    """The Response object: ``final`` False is the in-progress snapshot a stream opens with."""
    status = ("incomplete" if _incomplete(turn) else "completed") if final else "in_progress"
    out: dict[str, Any] = {
        "id": f"resp_{turn.seq}",
        "object": "response",
        "created_at": created_at,
        "status": status,
        "background": False,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "model": turn.model,
        "output": _output(turn) if final else [],
        "service_tier": turn.behaviour.reported_tier(turn.body),
    }
    out.update(_echoed(turn.body))
    out["usage"] = _usage(turn) if final else None
    if status == "completed":
        out["completed_at"] = int(time.time())
    return out


async def respond(request: web.Request, turn: Turn) -> web.StreamResponse | None:
    """Answer one Responses request; None means the connection was deliberately dropped."""
    handled, answer = await run_faults(request, turn, fault_response, _stream)
    if handled:
        return answer
    return web.Response(body=orjson.dumps(_response(turn, int(time.time()), True)), content_type=_JSON)


# A stream event before its sequence number: (is a content delta, event object).
_Event = tuple[bool, dict[str, Any]]


def _text_events(turn: Turn, text: str) -> list[_Event]:
    at = {"item_id": f"msg_{turn.seq}", "output_index": 0}
    part = {**at, "content_index": 0}
    events: list[_Event] = [
        (False, {"type": "response.output_item.added", "output_index": 0, "item": _message(turn, None)}),
        (False, {"type": "response.content_part.added", **part, "part": _text_part("")}),
    ]
    events += [
        (True, {"type": "response.output_text.delta", **part, "delta": p, "logprobs": []}) for p in turn.plan.pieces
    ]
    events += [
        (False, {"type": "response.output_text.done", **part, "text": text, "logprobs": []}),
        (False, {"type": "response.content_part.done", **part, "part": _text_part(text)}),
        (False, {"type": "response.output_item.done", "output_index": 0, "item": _message(turn, text)}),
    ]
    return events


def _tool_events(turn: Turn, index: int, i: int, tc: ToolCall) -> list[_Event]:
    at = {"item_id": f"fc_{turn.seq}_{i}", "output_index": index}
    added, done = _function_call(turn, i, tc, False), _function_call(turn, i, tc, True)
    events: list[_Event] = [(False, {"type": "response.output_item.added", "output_index": index, "item": added})]
    events += [(True, {"type": "response.function_call_arguments.delta", **at, "delta": p}) for p in tc.arg_pieces()]
    events += [
        (False, {"type": "response.function_call_arguments.done", **at, "arguments": tc.arguments}),
        (False, {"type": "response.output_item.done", "output_index": index, "item": done}),
    ]
    return events


def _events(turn: Turn) -> list[_Event]:
    """The output part of the stream (between ``response.in_progress`` and the closing event)."""
    plan = turn.plan
    events = _text_events(turn, plan.text) if plan.text is not None else []
    first = 1 if plan.text is not None else 0
    for i, tc in enumerate(plan.tools):
        events += _tool_events(turn, first + i, i, tc)
    return events


def _frame(event: dict[str, Any]) -> bytes:
    kind: str = event["type"]
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


class _Writer:
    """Writes stream frames, numbering the events and counting the frames in the call log."""

    def __init__(self, resp: web.StreamResponse, turn: Turn) -> None:
        self.resp = resp
        self.record = turn.record
        self.seq = 0

    async def raw(self, data: bytes) -> None:
        await self.resp.write(data)
        self.record["chunks_sent"] += 1

    async def event(self, event: dict[str, Any]) -> None:
        await self.raw(_frame({**event, "sequence_number": self.seq}))
        self.seq += 1


async def _stream(request: web.Request, turn: Turn) -> web.StreamResponse | None:
    b = turn.behaviour
    created_at = int(time.time())
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await resp.prepare(request)
    out = _Writer(resp, turn)
    snapshot = _response(turn, created_at, False)
    await out.event({"type": "response.created", "response": snapshot})
    await out.event({"type": "response.in_progress", "response": snapshot})
    stop_at = {"drop": b.drop_after, "error_event": b.drop_after, "malformed": 1}.get(turn.fault or "")
    n_deltas = 0
    for is_delta, event in _events(turn):
        if is_delta:
            if stop_at is not None and n_deltas >= stop_at:
                break
            await pause(b.ttft_ms if n_deltas == 0 else b.itl_ms)
            n_deltas += 1
        await out.event(event)
    if turn.fault == "drop":
        if request.transport is not None:
            request.transport.abort()
        return None
    if turn.fault == "malformed":
        await out.raw(_BROKEN)
    elif turn.fault == "error_event":
        message = b.error_message or "upstream exploded"
        await out.event({"type": "error", "code": "server_error", "message": message, "param": None})
    else:
        await pause(b.ttft_ms if n_deltas == 0 else 0.0)
        final = _response(turn, created_at, True)
        kind = "response.incomplete" if final["status"] == "incomplete" else "response.completed"
        await out.event({"type": kind, "response": final})
    await resp.write_eof()
    return resp
