"""Serving from and storing into the response cache: a hit costs $0 and is answered as JSON or
as a proper SSE stream; only complete, successful answers are stored."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator
from typing import Any

import orjson
from starlette.responses import Response

from gateway.api.sse_response import SSEResponse
from gateway.cache.response_store import CacheStore, CacheUnavailable
from gateway.money.pricing import Cost, Usage
from gateway.pipeline.exchange import Call

__all__ = ["assemble", "lookup", "serve_hit", "store"]

log = logging.getLogger("gateway.cache")
_ZERO = Cost().usage_fields()


async def lookup(call: Call) -> dict[str, Any] | None:
    """The cached entry for this attempt, or None (a miss, or the cache is unreachable)."""
    cache, metrics = call.state.response_cache, call.state.metrics
    assert cache is not None and call.cache_key is not None
    try:
        raw = await cache.get(call.cache_key)
    except CacheUnavailable as exc:
        call.cache_result = "bypass"
        metrics.child(metrics.cache_errors, "response").inc()
        log.warning("response cache unavailable, bypassed: %s", exc)
        return None
    call.cache_result = "hit" if raw is not None else "miss"
    metrics.child(metrics.cache_requests, "response", call.cache_result).inc()
    return orjson.loads(raw) if raw is not None else None


def store(call: Call, body: dict[str, Any], cost: Cost) -> None:
    """Store a complete answer; the write runs in the background, off the response's path."""
    cache, settings = call.state.response_cache, call.state.settings
    if cache is None or call.cache_key is None or not call.cache_write:
        return
    value = orjson.dumps({"body": body, "cost_pico": cost.total})
    if len(value) <= settings.cache.max_entry_bytes:
        call.state.background.spawn(_write(call, cache, call.cache_key, value))


async def _write(call: Call, cache: CacheStore, key: str, value: bytes) -> None:
    try:
        await cache.set(key, value, call.state.settings.cache.ttl_s)
    except CacheUnavailable as exc:
        metrics = call.state.metrics
        metrics.child(metrics.cache_errors, "response").inc()
        log.warning("response cache unavailable, answer not stored: %s", exc)


def serve_hit(call: Call, entry: dict[str, Any], stream: bool, include_usage: bool) -> Response | SSEResponse:
    metrics = call.state.metrics
    metrics.cache_saved.add(("response",), entry["cost_pico"])
    call.state.ledger.add(call.ledger_record(Usage(), Cost(), "200", cache_saved=entry["cost_pico"]))
    body = dict(entry["body"])
    body["usage"] = {**(body.get("usage") or {}), **_ZERO}
    call.record("200")
    headers = call.headers()
    if not stream:
        headers["x-gateway-cost-usd"] = "0"
        return Response(orjson.dumps(body), media_type="application/json", headers=headers)
    return SSEResponse(_replay(body, include_usage), headers)


async def _replay(body: dict[str, Any], include_usage: bool) -> AsyncGenerator[bytes, None]:
    base = {"id": body.get("id"), "object": "chat.completion.chunk", "created": int(time.time()),
            "model": body.get("model")}
    events = []
    for choice in body.get("choices") or ():
        message, index = choice.get("message") or {}, choice.get("index", 0)
        delta: dict[str, Any] = {"role": "assistant", "content": message.get("content")}
        if message.get("tool_calls"):
            delta["tool_calls"] = [{**c, "index": i} for i, c in enumerate(message["tool_calls"])]
        events.append({**base, "choices": [{"index": index, "delta": delta, "finish_reason": None}]})
        finish = {"index": index, "delta": {}, "finish_reason": choice.get("finish_reason")}
        events.append({**base, "choices": [finish]})
    if include_usage:
        events.append({**base, "choices": [], "usage": body["usage"]})
    yield b"".join(b"data: " + orjson.dumps(e) + b"\n\n" for e in events) + b"data: [DONE]\n\n"


def assemble(pieces: list[bytes]) -> dict[str, Any] | None:
    """Rebuild a chat.completion from relayed SSE chunks; None if they do not parse."""
    choices: dict[int, dict[str, Any]] = {}
    head: dict[str, Any] = {}
    for event in b"".join(pieces).split(b"\n\n"):
        if not event.startswith(b"data: {"):
            continue
        chunk = orjson.loads(event[6:])
        head = head or {k: chunk.get(k) for k in ("id", "created", "model", "system_fingerprint")}
        for c in chunk.get("choices") or ():
            slot = choices.setdefault(c.get("index", 0), {"content": [], "calls": {}, "finish": None})
            delta = c.get("delta") or {}
            if isinstance(delta.get("content"), str):
                slot["content"].append(delta["content"])
            for call in delta.get("tool_calls") or ():
                entry = slot["calls"].setdefault(call.get("index", 0), {"id": None, "type": "function",
                                                                        "function": {"name": "", "arguments": ""}})
                entry["id"] = call.get("id") or entry["id"]
                fn = call.get("function") or {}
                entry["function"]["name"] += fn.get("name") or ""
                entry["function"]["arguments"] += fn.get("arguments") or ""
            slot["finish"] = c.get("finish_reason") or slot["finish"]
    if not choices:
        return None
    out = []
    for index, slot in sorted(choices.items()):
        message: dict[str, Any] = {"role": "assistant", "content": "".join(slot["content"]) or None}
        if slot["calls"]:
            message["tool_calls"] = [slot["calls"][i] for i in sorted(slot["calls"])]
        out.append({"index": index, "message": message, "finish_reason": slot["finish"], "logprobs": None})
    return {**head, "object": "chat.completion", "choices": out}
