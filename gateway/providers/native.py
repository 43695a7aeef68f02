"""Native pass-through: a client's Anthropic Messages request to an Anthropic model, and its
Responses API request to OpenAI, sent as the client wrote it (only the model id is swapped; the
gateway's own credentials, never the client's), the answer and the SSE events relayed as they
arrive. Nothing is translated, so thinking blocks and their signatures, `cache_control` (5-minute
and 1-hour), `anthropic-beta` features, Responses built-in tools, `previous_response_id` and
`store` mean what the provider says they mean.

Usage is read from the provider's own reports (Anthropic's message_start / message_delta, the
Responses API's `response.completed`) and priced by the pricing core like any answer. The last
event of a stream (message_delta + message_stop; response.completed) is held back until the
usage is priced, then sent with `cost` and `cost_details` added to its usage.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from gateway.config.settings import ModelSpec
from gateway.money.pricing import Usage, service_tier_of
from gateway.providers.base import Completion
from gateway.providers.errors import bad_response, error_from_event
from gateway.providers.sse import SSEStream
from gateway.providers.transport import USER_AGENT, HTTPTransport
from gateway.providers.upstream_http import Endpoint, UpstreamResponse

__all__ = ["FORWARDED_HEADERS", "AnthropicNativeStream", "NativeProvider", "ResponsesNativeStream",
           "responses_usage"]

ANTHROPIC_VERSION = "2023-06-01"
FORWARDED_HEADERS = ("anthropic-beta", "anthropic-version")  # the client's, to Anthropic
_FINAL_RESPONSE_EVENTS = frozenset({b"response.completed", b"response.incomplete"})


def _header_value(value: str | None) -> str | None:
    """A client's header value, only if it can be written into a request head as it is."""
    if not value or any(c in value for c in "\r\n") or not value.isascii():
        return None
    return value


def _int(value: Any) -> int:
    return value if isinstance(value, int) and value > 0 else 0


def responses_usage(usage: Any, service_tier: Any = None) -> Usage | None:
    """The Responses API's usage (cached tokens inside input, reasoning inside output), billed at
    the `service_tier` the response reports (beside its usage)."""
    if not isinstance(usage, dict):
        return None
    inp, out = _int(usage.get("input_tokens")), _int(usage.get("output_tokens"))
    cached = min(_int((usage.get("input_tokens_details") or {}).get("cached_tokens")), inp)
    reasoning = min(_int((usage.get("output_tokens_details") or {}).get("reasoning_tokens")), out)
    return Usage(input=inp - cached, cached_input=cached, output=out - reasoning, reasoning=reasoning,
                 service_tier=service_tier_of(service_tier))


class NativeProvider:
    """`api`: "messages" (an Anthropic model) or "responses" (an OpenAI model)."""

    def __init__(self, transport: HTTPTransport) -> None:
        self._transport = transport

    def _endpoint(self, model: ModelSpec, api: str, headers: dict[str, str], path: str = "/v1/messages") -> Endpoint:
        if api == "responses":
            auth = {"Authorization": f"Bearer {model.api_key}"} if model.api_key else {}
            return self._transport.endpoint(model, "/responses", auth)
        version = _header_value(headers.get("anthropic-version")) or ANTHROPIC_VERSION
        beta = _header_value(headers.get("anthropic-beta"))
        own = {"anthropic-version": version, **({"x-api-key": model.api_key} if model.api_key else {})}
        if beta is None and version == ANTHROPIC_VERSION:
            return self._transport.endpoint(model, path, own)  # the usual head, prepared once
        return Endpoint(f"{model.api_base}{path}", {"User-Agent": USER_AGENT, "Content-Type": "application/json",
                                                   **own, **({"anthropic-beta": beta} if beta else {})})

    async def complete(self, model: ModelSpec, api: str, body: dict[str, Any], headers: dict[str, str],
                       deadline: float | None = None) -> Completion:
        data = await self._transport.post_json(model, self._endpoint(model, api, headers), body, deadline)
        if api == "messages":
            if not isinstance(data, dict) or data.get("type") != "message":
                raise bad_response(model, "not a message")
            usage = Usage.from_anthropic(data["usage"]) if isinstance(data.get("usage"), dict) else None
        else:
            if not isinstance(data, dict) or data.get("object") != "response":
                raise bad_response(model, "not a response")
            usage = responses_usage(data.get("usage"), data.get("service_tier"))
        return Completion(data, usage, usage.to_openai() if usage is not None else None)

    async def count_tokens(self, model: ModelSpec, body: dict[str, Any], headers: dict[str, str],
                           deadline: float | None = None) -> int:
        """Anthropic's own count of a Messages request's input tokens (free of charge)."""
        endpoint = self._endpoint(model, "messages", headers, "/v1/messages/count_tokens")
        data = await self._transport.post_json(model, endpoint, body, deadline)
        if not isinstance(data, dict) or not isinstance(data.get("input_tokens"), int):
            raise bad_response(model, "no input_tokens")
        return int(data["input_tokens"])

    async def stream(self, model: ModelSpec, api: str, body: dict[str, Any], headers: dict[str, str],
                     deadline: float | None = None) -> AnthropicNativeStream | ResponsesNativeStream:
        resp = await self._transport.open_stream(model, self._endpoint(model, api, headers),
                                                 {**body, "stream": True}, deadline)
        return AnthropicNativeStream(model, resp) if api == "messages" else ResponsesNativeStream(model, resp)


def _frame(kind: bytes, data: bytes) -> bytes:
    return b"event: " + kind + b"\ndata: " + data + b"\n\n"


class AnthropicNativeStream(SSEStream):
    """Relays Anthropic's events; keeps the usage; holds message_delta back (`usage_chunk`)."""

    def __init__(self, model: ModelSpec, resp: UpstreamResponse) -> None:
        super().__init__(model, resp)
        self._raw_usage: dict[str, Any] = {}
        self._text: list[str] = []

    def _take_usage(self, usage: Any) -> None:
        if isinstance(usage, dict):
            self._raw_usage.update({k: v for k, v in usage.items() if v is not None})
            self.usage = Usage.from_anthropic(self._raw_usage)
            self.usage_dict = self.usage.to_openai()

    def _event(self, data: bytes) -> bytes | None:
        event = orjson.loads(data)
        kind = event.get("type") if isinstance(event, dict) else None
        if not isinstance(kind, str):
            raise bad_response(self._model, "event without a type")
        if kind == "error":
            raise error_from_event(self._model, event)
        if self.first_chunk_at is None:
            self.first_chunk_at = time.perf_counter()
        if kind == "message_start":
            self._take_usage((event.get("message") or {}).get("usage"))
        elif kind == "content_block_delta":
            delta = event.get("delta") or {}
            self._text.append(str(delta.get("text") or delta.get("partial_json") or delta.get("thinking") or ""))
        elif kind == "message_delta":
            self._take_usage(event.get("usage"))
            self.usage_chunk = event  # sent when priced, with the cost in its usage
            return None
        elif kind == "message_stop":
            self.finished = True
            return None
        return _frame(kind.encode(), data)

    def produced_text(self) -> str:
        return "".join(self._text)


class ResponsesNativeStream(SSEStream):
    """Relays the Responses API's events; holds the final one (with the usage) back."""

    def __init__(self, model: ModelSpec, resp: UpstreamResponse) -> None:
        super().__init__(model, resp)
        self._text: list[str] = []

    def _event(self, data: bytes) -> bytes | None:
        event = orjson.loads(data)
        kind = event.get("type") if isinstance(event, dict) else None
        if not isinstance(kind, str):
            raise bad_response(self._model, "event without a type")
        if kind in ("error", "response.failed"):
            failed = event.get("response", {}).get("error") if kind == "response.failed" else event
            raise error_from_event(self._model, {"error": failed})
        if self.first_chunk_at is None:
            self.first_chunk_at = time.perf_counter()
        if kind.endswith(".delta"):
            self._text.append(str(event.get("delta") or ""))
        if kind.encode() in _FINAL_RESPONSE_EVENTS:
            response = event.get("response") or {}
            self.usage = responses_usage(response.get("usage"), response.get("service_tier"))
            self.usage_dict = self.usage.to_openai() if self.usage is not None else None
            self.usage_chunk = event
            self.finished = True
            return None
        return _frame(kind.encode(), data)

    def produced_text(self) -> str:
        return "".join(self._text)
