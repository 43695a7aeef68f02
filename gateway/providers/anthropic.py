"""Anthropic Messages API upstreams, through our own adapter (no litellm import on this path)."""

from __future__ import annotations

import time
from typing import Any

import orjson

from gateway.config.settings import ModelSpec
from gateway.errors import InvalidRequest
from gateway.money.pricing import Usage
from gateway.providers.anthropic_translate import FINISH_REASONS, to_anthropic_request, to_openai_completion
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


class AnthropicProvider:
    def __init__(self, transport: HTTPTransport) -> None:
        self._transport = transport

    async def complete(self, model: ModelSpec, body: dict[str, Any], deadline: float | None = None) -> Completion:
        request = to_anthropic_request(model, body)
        endpoint = self._transport.endpoint(model, "/v1/messages", _headers(model))
        data = await self._transport.post_json(model, endpoint, request, deadline)
        if not isinstance(data, dict) or data.get("type") != "message":
            raise bad_response(model, "not a message")
        out, usage = to_openai_completion(data)
        return Completion(out, usage, usage.to_openai() if usage else None)

    async def embed(self, model: ModelSpec, body: dict[str, Any], deadline: float | None = None) -> Completion:
        raise InvalidRequest(f"model '{model.name}': Anthropic serves no embeddings", param="model")

    async def stream(
        self, model: ModelSpec, body: dict[str, Any], deadline: float | None = None
    ) -> AnthropicStream:
        request = to_anthropic_request(model, {**body, "stream": True})
        endpoint = self._transport.endpoint(model, "/v1/messages", _headers(model))
        return AnthropicStream(model, await self._transport.open_stream(model, endpoint, request, deadline))


class AnthropicStream(SSEStream):
    """Translates Anthropic stream events into OpenAI chunks as they arrive."""

    def __init__(self, model: ModelSpec, resp: UpstreamResponse) -> None:
        super().__init__(model, resp)
        self._raw_usage: dict[str, Any] = {}
        self._text: list[str] = []
        self._tool_index: dict[int, int] = {}  # anthropic block index -> openai tool call index
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
            block = event.get("content_block") or {}
            if block.get("type") == "tool_use":
                index = self._tool_index.setdefault(event.get("index", 0), len(self._tool_index))
                self._text.append(str(block.get("name") or ""))
                call = {"index": index, "id": block.get("id"), "type": "function",
                        "function": {"name": block.get("name"), "arguments": ""}}
                return self._chunk({"tool_calls": [call]})
            return None
        if kind == "content_block_delta":
            delta = event.get("delta") or {}
            if delta.get("type") == "text_delta":
                self._text.append(str(delta.get("text") or ""))
                return self._chunk({"content": delta.get("text") or ""})
            if delta.get("type") == "input_json_delta":
                piece = str(delta.get("partial_json") or "")
                self._text.append(piece)
                index = self._tool_index.get(event.get("index", 0), 0)
                return self._chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
            return None
        if kind == "message_delta":
            self._take_usage(event.get("usage"))
            reason = (event.get("delta") or {}).get("stop_reason")
            return self._chunk({}, FINISH_REASONS.get(str(reason), "stop"))
        if kind not in ("ping", "content_block_stop", "message_stop", None):
            return None
        if kind is None:
            raise bad_response(self._model, "event without a type")
        return None

    def produced_text(self) -> str:
        return "".join(self._text)
