"""The client's own events, relayed from a provider that serves its API natively
(`gateway/providers/native.py`): passed through as they arrive; the last one, held back until
the usage is priced, is sent with `cost` and `cost_details` added to its usage."""

from __future__ import annotations

from typing import Any

import orjson

from gateway.errors import GatewayError
from gateway.formats.messages import anthropic_error_type

__all__ = ["NativeMessagesOut", "NativeResponsesOut", "cost_fields", "native_out", "text_only_chat"]

_TEXT_KEYS = frozenset({"text", "content", "input", "instructions", "system", "output", "arguments", "thinking"})


def cost_fields(usage: dict[str, Any]) -> dict[str, Any]:
    """`cost` and `cost_details` of a settled usage."""
    return {k: usage[k] for k in ("cost", "cost_details") if k in usage}


def _texts(value: Any, out: list[str]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, str) and key in _TEXT_KEYS:
                out.append(item)
            elif isinstance(item, dict | list):
                _texts(item, out)
    elif isinstance(value, list):
        for item in value:
            _texts(item, out)


def text_only_chat(body: dict[str, Any], max_tokens: Any) -> dict[str, Any]:
    """A chat form of a request that only its provider can serve as sent (server or built-in
    tools, documents, ...: what the translation refuses): all its text as one message, so that
    the gateway can still count it for the key's limits and budget hold."""
    texts: list[str] = []
    _texts({k: v for k, v in body.items() if k != "model"}, texts)
    chat: dict[str, Any] = {"model": body.get("model"), "messages": [{"role": "user", "content": "\n".join(texts)}]}
    if max_tokens is not None:
        chat["max_tokens"] = max_tokens
    if body.get("stream") is True:
        chat.update(stream=True, stream_options={"include_usage": True})
    return chat


def _frame(kind: str, data: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


class NativeMessagesOut:
    """Anthropic's own stream: message_delta (with the cost) and message_stop come last."""

    response: dict[str, Any] | None = None  # (nothing is kept for the Messages API)

    def feed(self, events: bytes) -> bytes:
        return events

    def finish(self, usage: dict[str, Any], held: dict[str, Any]) -> bytes:
        delta = {**held, "type": "message_delta"}
        own = held.get("usage")
        delta["usage"] = {**(own if isinstance(own, dict) else {}), **cost_fields(usage)}
        return _frame("message_delta", delta) + _frame("message_stop", {"type": "message_stop"})

    def error(self, exc: GatewayError) -> bytes:
        error = {"type": anthropic_error_type(exc.status_code), "message": exc.message}
        return _frame("error", {"type": "error", "error": error})


class NativeResponsesOut:
    """The Responses API's own stream: response.completed (with the cost) comes last."""

    def __init__(self) -> None:
        self.response: dict[str, Any] | None = None  # the completed response, once sent
        self._sequence = 0

    def feed(self, events: bytes) -> bytes:
        self._sequence += events.count(b"\ndata: ")
        return events

    def finish(self, usage: dict[str, Any], held: dict[str, Any]) -> bytes:
        response = dict(held.get("response") or {})
        own = response.get("usage")
        response["usage"] = {**(own if isinstance(own, dict) else {}), **cost_fields(usage)}
        self.response = response
        kind = str(held.get("type") or "response.completed")
        return _frame(kind, {**held, "response": response})

    def error(self, exc: GatewayError) -> bytes:
        return _frame("error", {"type": "error", "code": exc.code or "server_error", "message": exc.message,
                                "param": exc.param, "sequence_number": self._sequence})


def native_out(api: str) -> NativeMessagesOut | NativeResponsesOut:
    """The relay of a provider's own events for a client API served natively."""
    return NativeMessagesOut() if api == "messages" else NativeResponsesOut()
