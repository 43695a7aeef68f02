"""Any other provider litellm knows (Gemini, Bedrock, Vertex, Cohere, ...), through litellm's
translation. litellm is never imported for OpenAI-compatible or Anthropic traffic: only when a model
that uses it has a key, then in the warm-up thread after start-up (a request for such a model that
comes first waits for it in a worker thread, never on the event loop). Its exceptions are
translated in `gateway.providers.errors.upstream_errors`.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import orjson

from gateway.config.settings import ModelSpec
from gateway.money.pricing import Usage
from gateway.providers.base import Completion
from gateway.providers.errors import upstream_errors
from gateway.providers.transport import time_limit

__all__ = ["PROVIDER_TYPE", "LitellmProvider", "LitellmStream", "load_litellm"]

PROVIDER_TYPE = "litellm"
_PASSTHROUGH = (
    "temperature", "top_p", "max_tokens", "max_completion_tokens", "stop", "tools", "tool_choice",
    "response_format", "seed", "n", "presence_penalty", "frequency_penalty", "user", "parallel_tool_calls",
    "reasoning_effort", "logprobs", "top_logprobs",
)


def load_litellm() -> Any:
    """The litellm module, imported offline (4-7 s of CPU the first time: the app does it in its
    warm-up thread when a model uses litellm, so no request waits for it inside its time limit)."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("LITELLM_OFFLINE_MODE", "true")
    import litellm

    return litellm


def _kwargs(model: ModelSpec, body: dict[str, Any], limit: float) -> dict[str, Any]:
    kwargs: dict[str, Any] = {k: body[k] for k in _PASSTHROUGH if body.get(k) is not None}
    kwargs.update(
        model=f"{model.provider}/{model.upstream_model}",
        messages=body["messages"],
        timeout=limit,
        num_retries=0,
    )
    if model.api_key:
        kwargs["api_key"] = model.api_key
    if model.api_base:
        kwargs["api_base"] = model.api_base
    return kwargs


def _usage(raw: Any) -> tuple[Usage | None, dict[str, Any] | None]:
    if not isinstance(raw, dict) or not raw.get("prompt_tokens") and not raw.get("completion_tokens"):
        return None, None
    return Usage.from_openai(raw), raw


class LitellmProvider:
    def __init__(self, transport: Any = None) -> None:
        del transport  # litellm manages its own HTTP clients
        self._litellm: Any = None

    async def _module(self) -> Any:
        """litellm, imported in a worker thread if needed: a request that arrives while the
        warm-up thread is still importing it waits there, not on the event loop (and not on
        its time limit: the wait is nobody's timeout)."""
        if self._litellm is None:
            self._litellm = await asyncio.to_thread(load_litellm)
        return self._litellm

    async def complete(self, model: ModelSpec, body: dict[str, Any], deadline: float | None = None) -> Completion:
        litellm = await self._module()
        with upstream_errors(model):
            limit = time_limit(model, deadline)
            async with asyncio.timeout(limit):  # httpx's timeout is per phase, this is the whole call
                response = await litellm.acompletion(**_kwargs(model, body, limit))
        data = response.model_dump(exclude_none=False)
        usage, usage_dict = _usage(data.pop("usage", None))
        return Completion(data, usage, usage_dict)

    async def embed(self, model: ModelSpec, body: dict[str, Any], deadline: float | None = None) -> Completion:
        litellm = await self._module()
        kwargs: dict[str, Any] = {k: body[k] for k in ("encoding_format", "dimensions", "user") if k in body}
        kwargs.update(model=f"{model.provider}/{model.upstream_model}", input=body["input"], num_retries=0)
        if model.api_key:
            kwargs["api_key"] = model.api_key
        if model.api_base:
            kwargs["api_base"] = model.api_base
        with upstream_errors(model):
            limit = time_limit(model, deadline)
            async with asyncio.timeout(limit):
                response = await litellm.aembedding(timeout=limit, **kwargs)
        data = response.model_dump(exclude_none=False)
        usage, usage_dict = _usage(data.pop("usage", None))
        return Completion(data, usage, usage_dict)

    async def stream(self, model: ModelSpec, body: dict[str, Any], deadline: float | None = None) -> LitellmStream:
        litellm = await self._module()
        with upstream_errors(model):
            limit = time_limit(model, deadline)
            kwargs = _kwargs(model, body, model.timeout_s)  # httpx's read timeout: between chunks
            kwargs.update(stream=True, stream_options={"include_usage": True})
            async with asyncio.timeout(limit):  # until the stream is open
                return LitellmStream(model, await litellm.acompletion(**kwargs))


class LitellmStream:
    def __init__(self, model: ModelSpec, response: Any) -> None:
        self._model = model
        self._response = response
        self._text: list[str] = []
        self.usage: Usage | None = None
        self.usage_dict: dict[str, Any] | None = None
        self.usage_chunk: dict[str, Any] | None = None
        self.first_chunk_at: float | None = None
        self.finished = False
        self._closing: asyncio.Future[Any] | None = None

    async def __aiter__(self) -> Any:
        with upstream_errors(self._model):
            async for chunk in self._response:
                data = chunk.model_dump(exclude_none=True)
                usage, usage_dict = _usage(data.pop("usage", None))
                if usage is not None:
                    self.usage, self.usage_dict = usage, usage_dict
                    self.usage_chunk = {**data, "choices": []}
                if not data.get("choices"):
                    continue
                if self.first_chunk_at is None:
                    self.first_chunk_at = time.perf_counter()
                for choice in data["choices"]:
                    delta = choice.get("delta") or {}
                    self._text.append(str(delta.get("content") or ""))
                yield b"data: " + orjson.dumps(data) + b"\n\n"
        self.finished = True

    def close(self) -> None:
        close = getattr(self._response, "aclose", None)
        if close is not None and not self.finished:
            self._closing = asyncio.ensure_future(close())

    def produced_text(self) -> str:
        return "".join(self._text)
