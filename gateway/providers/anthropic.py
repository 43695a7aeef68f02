"""Anthropic Messages API upstreams, through our own adapter (no litellm import on this path)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from dataclasses import fields
from typing import Any

import orjson

from gateway.config.settings import ModelSpec
from gateway.errors import InvalidRequest
from gateway.money.pricing import Usage
from gateway.providers.anthropic_translate import (
    AnswerShape,
    finish_reason,
    to_anthropic_request,
    to_openai_completion,
)
from gateway.providers.base import Completion
from gateway.providers.errors import bad_response, error_from_event
from gateway.providers.sse import SSEStream
from gateway.providers.transport import HTTPTransport
from gateway.providers.upstream_http import UpstreamResponse

__all__ = ["PROVIDER_TYPE", "AnthropicProvider", "AnthropicStream"]

PROVIDER_TYPE = "anthropic"
API_VERSION = "2023-06-01"


def _headers(model: ModelSpec) -> dict[str, str]:
    headers = {"anthropic-version": API_VERSION}
    if model.api_key:
        headers["x-api-key"] = model.api_key
    return headers


def _sum_usage(usages: list[Usage | None]) -> Usage | None:
    """Every billing bucket summed over the calls; None if any call's usage is unknown (then the
    whole answer is counted)."""
    known = [u for u in usages if u is not None]
    if len(known) < len(usages):
        return None
    summed = {f.name: sum(getattr(u, f.name) for u in known) for f in fields(Usage) if f.name != "service_tier"}
    return Usage(**summed, service_tier=known[0].service_tier if known else "default")


def _merge(completions: list[Completion]) -> Completion:
    """n answers as one chat.completion with choices 0..n-1 and their usage summed."""
    body = completions[0].body
    body["choices"] = [{**c.body["choices"][0], "index": i} for i, c in enumerate(completions)]
    usage = _sum_usage([c.usage for c in completions])
    return Completion(body, usage, usage.to_openai() if usage else None)


async def _all(calls: list[Coroutine[Any, Any, Completion]]) -> list[Completion]:
    """Run the calls concurrently; the first failure cancels the others and is raised."""
    tasks = [asyncio.ensure_future(call) for call in calls]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


class AnthropicProvider:
    def __init__(self, transport: HTTPTransport) -> None:
        self._transport = transport

    async def complete(self, model: ModelSpec, body: dict[str, Any], deadline: float | None = None) -> Completion:
        """Anthropic has no `n`: n > 1 is n concurrent calls of the same request, merged."""
        request, shape = to_anthropic_request(model, body)
        n = body.get("n") or 1
        if n == 1:
            return await self._one(model, request, shape, deadline)
        return _merge(await _all([self._one(model, request, shape, deadline) for _ in range(n)]))

    async def _one(
        self, model: ModelSpec, request: dict[str, Any], shape: AnswerShape, deadline: float | None
    ) -> Completion:
        endpoint = self._transport.endpoint(model, "/v1/messages", _headers(model))
        data = await self._transport.post_json(model, endpoint, request, deadline)
        if not isinstance(data, dict) or data.get("type") != "message":
            raise bad_response(model, "not a message")
        out, usage = to_openai_completion(data, shape)
        return Completion(out, usage, usage.to_openai() if usage else None)

    async def embed(self, model: ModelSpec, body: dict[str, Any], deadline: float | None = None) -> Completion:
        raise InvalidRequest(f"model '{model.name}': Anthropic serves no embeddings", param="model")

    async def stream(
        self, model: ModelSpec, body: dict[str, Any], deadline: float | None = None
    ) -> AnthropicStream:
        request, shape = to_anthropic_request(model, {**body, "stream": True})
        endpoint = self._transport.endpoint(model, "/v1/messages", _headers(model))
        return AnthropicStream(model, await self._transport.open_stream(model, endpoint, request, deadline), shape)


class AnthropicStream(SSEStream):
    """Translates Anthropic stream events into OpenAI chunks as they arrive: text as `content`, a
    structured-output tool's input as `content` too, thinking as `reasoning_content` (each whole
    block, signature included, as `thinking_blocks` when it ends), tool calls as `tool_calls` (or
    `function_call` for a legacy request)."""

    def __init__(self, model: ModelSpec, resp: UpstreamResponse, shape: AnswerShape) -> None:
        super().__init__(model, resp)
        self._shape = shape
        self._raw_usage: dict[str, Any] = {}
        self._text: list[str] = []
        self._tool_index: dict[int, int] = {}  # anthropic block index -> openai tool call index
        self._json_blocks: set[int] = set()  # blocks of the structured-output tool
        self._thinking: dict[int, dict[str, Any]] = {}  # thinking blocks, as they accumulate
        self._base: dict[str, Any] = {"object": "chat.completion.chunk", "created": int(time.time())}

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        return orjson.dumps({**self._base, "choices": [choice]})

    def _take_usage(self, usage: Any) -> None:
        if isinstance(usage, dict):
            self._raw_usage.update({k: v for k, v in usage.items() if v is not None})
            self.usage = Usage.from_anthropic(self._raw_usage)
            self.usage_dict = self.usage.to_openai()

    def _event(self, data: bytes) -> bytes | None:
        event = orjson.loads(data)
        kind = event.get("type") if isinstance(event, dict) else None
        if kind == "error":
            raise error_from_event(self._model, event)
        out = self._translate(kind, event)
        if out is not None and self.first_chunk_at is None:
            self.first_chunk_at = time.perf_counter()
        if kind == "message_stop":
            self.finished = True
            self.usage_chunk = {**self._base, "choices": []}
        return b"data: " + out + b"\n\n" if out is not None else None

    def _translate(self, kind: Any, event: dict[str, Any]) -> bytes | None:
        if kind == "message_start":
            message = event.get("message") or {}
            self._base.update(id=message.get("id"), model=message.get("model"))
            self._take_usage(message.get("usage"))
            return self._chunk({"role": "assistant", "content": ""})
        if kind == "content_block_start":
            return self._block_start(event.get("index", 0), event.get("content_block") or {})
        if kind == "content_block_delta":
            return self._block_delta(event.get("index", 0), event.get("delta") or {})
        if kind == "content_block_stop":
            block = self._thinking.pop(event.get("index", 0), None)
            return self._chunk({"thinking_blocks": [block]}) if block is not None else None
        if kind == "message_delta":
            self._take_usage(event.get("usage"))
            reason = (event.get("delta") or {}).get("stop_reason")
            return self._chunk({}, finish_reason(reason, bool(self._tool_index), self._shape))
        if kind is None:
            raise bad_response(self._model, "event without a type")
        return None  # ping, message_stop, and events of later API versions

    def _block_start(self, index: int, block: dict[str, Any]) -> bytes | None:
        kind = block.get("type")
        if kind == "thinking":
            self._thinking[index] = {"type": "thinking", "thinking": "", "signature": block.get("signature") or ""}
        elif kind == "redacted_thinking":
            self._thinking[index] = {"type": "redacted_thinking", "data": block.get("data")}
        if kind != "tool_use":
            return None
        name = block.get("name")
        if name == self._shape.json_tool and not self._json_blocks:
            self._json_blocks.add(index)
            return None
        call_index = self._tool_index.setdefault(index, len(self._tool_index))
        self._text.append(str(name or ""))
        if self._shape.legacy:
            return self._chunk({"function_call": {"name": name, "arguments": ""}})
        call = {"index": call_index, "id": block.get("id"), "type": "function",
                "function": {"name": name, "arguments": ""}}
        return self._chunk({"tool_calls": [call]})

    def _block_delta(self, index: int, delta: dict[str, Any]) -> bytes | None:
        kind = delta.get("type")
        if kind == "text_delta":
            self._text.append(str(delta.get("text") or ""))
            return self._chunk({"content": delta.get("text") or ""})
        if kind == "thinking_delta":
            piece = str(delta.get("thinking") or "")
            self._text.append(piece)  # billed as output: counted if the usage must be estimated
            if index in self._thinking:
                self._thinking[index]["thinking"] += piece
            return self._chunk({"reasoning_content": piece})
        if kind == "signature_delta" and index in self._thinking:
            self._thinking[index]["signature"] += str(delta.get("signature") or "")
            return None
        if kind != "input_json_delta":
            return None
        piece = str(delta.get("partial_json") or "")
        self._text.append(piece)
        if index in self._json_blocks:
            return self._chunk({"content": piece})
        if self._shape.legacy:
            return self._chunk({"function_call": {"arguments": piece}})
        call_index = self._tool_index.get(index, 0)
        return self._chunk({"tool_calls": [{"index": call_index, "function": {"arguments": piece}}]})

    def produced_text(self) -> str:
        return "".join(self._text)
