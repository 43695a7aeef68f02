"""OpenAI-compatible upstreams (OpenAI, vLLM, Ollama, Together, DeepSeek, Groq, ...): the fast path.

No litellm on this path: pooled keep-alive connections (`gateway.providers.upstream_http`), the request
body forwarded as is (model id swapped, usage always requested), SSE chunks relayed one by one
as they arrive.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from gateway.config.settings import ModelSpec
from gateway.money.pricing import Usage
from gateway.providers.base import Completion
from gateway.providers.errors import bad_response, error_from_event
from gateway.providers.sse import SSEStream
from gateway.providers.transport import HTTPTransport
from gateway.providers.upstream_http import UpstreamResponse

__all__ = ["PROVIDER_TYPE", "OpenAIProvider", "OpenAIStream"]

PROVIDER_TYPE = "openai"


def _headers(model: ModelSpec) -> dict[str, str]:
    return {"Authorization": f"Bearer {model.api_key}"} if model.api_key else {}


class OpenAIProvider:
    def __init__(self, transport: HTTPTransport) -> None:
        self._transport = transport

    async def complete(self, model: ModelSpec, body: dict[str, Any], deadline: float | None = None) -> Completion:
        endpoint = self._transport.endpoint(model, "/chat/completions", _headers(model))
        data = await self._transport.post_json(model, endpoint, body, deadline)
        if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
            raise bad_response(model, "no choices")
        usage = data.get("usage")
        if not isinstance(usage, dict):
            return Completion(data, None, None)
        return Completion(data, Usage.from_openai(usage, data.get("service_tier")), usage)

    async def embed(self, model: ModelSpec, body: dict[str, Any], deadline: float | None = None) -> Completion:
        endpoint = self._transport.endpoint(model, "/embeddings", _headers(model))
        data = await self._transport.post_json(model, endpoint, body, deadline)
        if not isinstance(data, dict) or not isinstance(data.get("data"), list):
            raise bad_response(model, "no embeddings")
        usage = data.get("usage")
        if not isinstance(usage, dict):
            return Completion(data, None, None)
        return Completion(data, Usage.from_openai(usage), usage)

    async def stream(
        self, model: ModelSpec, body: dict[str, Any], deadline: float | None = None
    ) -> OpenAIStream:
        options = body.get("stream_options")
        body["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
        endpoint = self._transport.endpoint(model, "/chat/completions", _headers(model))
        return OpenAIStream(model, await self._transport.open_stream(model, endpoint, body, deadline))


class OpenAIStream(SSEStream):
    def __init__(self, model: ModelSpec, resp: UpstreamResponse) -> None:
        super().__init__(model, resp)
        self._chunks: list[dict[str, Any]] = []

    def _ended(self) -> None:
        if any(c.get("finish_reason") for ch in self._chunks[-2:] for c in ch.get("choices") or ()):
            self.finished = True  # some servers end without [DONE] after the final chunk

    def _event(self, payload: bytes) -> bytes | None:
        if payload == b"[DONE]":
            self.finished = True
            return None
        chunk = orjson.loads(payload)
        if not isinstance(chunk, dict):
            raise bad_response(self._model, "chunk is not an object")
        if "error" in chunk:
            raise error_from_event(self._model, chunk)
        if self.first_chunk_at is None:
            self.first_chunk_at = time.perf_counter()
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.usage, self.usage_dict = Usage.from_openai(usage, chunk.get("service_tier")), usage
            del chunk["usage"]
            self.usage_chunk = {**chunk, "choices": []}
            if not chunk.get("choices"):
                return None
            payload = orjson.dumps(chunk)
        self._chunks.append(chunk)
        return b"data: " + payload + b"\n\n"

    def produced_text(self) -> str:
        parts: list[str] = []
        for chunk in self._chunks:
            for choice in chunk.get("choices") or ():
                delta = choice.get("delta") or {}
                if isinstance(delta.get("content"), str):
                    parts.append(delta["content"])
                for call in delta.get("tool_calls") or ():
                    fn = call.get("function") or {}
                    parts.append(str(fn.get("name") or "") + str(fn.get("arguments") or ""))
        return "".join(parts)
