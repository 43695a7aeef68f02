"""OpenAI-compatible upstreams (OpenAI, vLLM, Ollama, Together, DeepSeek, Groq, ...): the fast path.

No litellm on this path: one pooled aiohttp session, the request body forwarded as is (model id
swapped, usage always requested), SSE chunks relayed one by one as they arrive.
"""

from __future__ import annotations

import time
from typing import Any

import aiohttp
import orjson

from gateway.pricing import Usage
from gateway.providers.base import Completion
from gateway.providers.errors import bad_response, error_from_event, status_error, upstream_errors
from gateway.settings import ModelSpec

__all__ = ["PROVIDER_TYPE", "OpenAIProvider", "OpenAIStream"]

PROVIDER_TYPE = "openai"


def _headers(model: ModelSpec) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    if model.api_key:
        headers["Authorization"] = f"Bearer {model.api_key}"
    return headers


class OpenAIProvider:
    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session

    async def complete(self, model: ModelSpec, body: dict[str, Any]) -> Completion:
        url = f"{model.api_base}/chat/completions"
        timeout = aiohttp.ClientTimeout(total=model.timeout_s)
        with upstream_errors(model):
            async with self._session.post(
                url, data=orjson.dumps(body), headers=_headers(model), timeout=timeout
            ) as resp:
                raw = await resp.read()
                if resp.status != 200:
                    raise status_error(model, resp.status, raw, resp.headers)
            data = orjson.loads(raw)
        if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
            raise bad_response(model, "no choices")
        usage = data.get("usage")
        if not isinstance(usage, dict):
            return Completion(data, None, None)
        return Completion(data, Usage.from_openai(usage), usage)

    async def stream(self, model: ModelSpec, body: dict[str, Any]) -> OpenAIStream:
        options = body.get("stream_options")
        body["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
        url = f"{model.api_base}/chat/completions"
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=model.timeout_s, sock_read=model.timeout_s)
        with upstream_errors(model):
            resp = await self._session.post(url, data=orjson.dumps(body), headers=_headers(model), timeout=timeout)
            if resp.status != 200:
                raw = await resp.read()
                resp.release()
                raise status_error(model, resp.status, raw, resp.headers)
        return OpenAIStream(model, resp)


class OpenAIStream:
    def __init__(self, model: ModelSpec, resp: aiohttp.ClientResponse) -> None:
        self._model = model
        self._resp = resp
        self._chunks: list[dict[str, Any]] = []
        self.usage: Usage | None = None
        self.usage_dict: dict[str, Any] | None = None
        self.usage_chunk: dict[str, Any] | None = None
        self.first_chunk_at: float | None = None
        self.finished = False

    async def __aiter__(self) -> Any:
        model = self._model
        with upstream_errors(model):
            async for line in self._resp.content:
                if not line.startswith(b"data:"):
                    continue
                payload = line[5:].strip()
                if payload == b"[DONE]":
                    self.finished = True
                    return
                chunk = orjson.loads(payload)
                if not isinstance(chunk, dict):
                    raise bad_response(model, "chunk is not an object")
                if "error" in chunk:
                    raise error_from_event(model, chunk)
                if self.first_chunk_at is None:
                    self.first_chunk_at = time.perf_counter()
                usage = chunk.get("usage")
                if isinstance(usage, dict):
                    self.usage, self.usage_dict = Usage.from_openai(usage), usage
                    del chunk["usage"]
                    self.usage_chunk = {**chunk, "choices": []}
                    if not chunk.get("choices"):
                        continue
                    payload = orjson.dumps(chunk)
                self._chunks.append(chunk)
                yield payload
        if any(c.get("finish_reason") for ch in self._chunks[-2:] for c in ch.get("choices") or ()):
            self.finished = True  # some servers end without [DONE] after the final chunk

    def close(self) -> None:
        # A finished stream returns its connection to the pool; an abandoned one is torn down,
        # which is how the upstream learns the request was cancelled.
        if self.finished:
            self._resp.release()
        else:
            self._resp.close()

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
