"""OpenAI's legacy Completions API (`POST /v1/completions`) over the pipeline's Chat Completions form.

A pure translator (no I/O): `completions_to_chat` turns a Completions request (one text prompt)
into a chat body with one user message, `chat_to_completion` turns the pipeline's `chat.completion`
into a `text_completion`, and `CompletionsStream` turns its `chat.completion.chunk` stream into
`text_completion` chunks, what the openai SDK's `client.completions.create(stream=True)` reads.
What only a raw completion model can do (`suffix`, `echo`, `logprobs`, `best_of`, token-id or
several prompts) is refused, naming the parameter.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.errors import GatewayError, InvalidRequest

__all__ = ["CompletionsStream", "chat_to_completion", "completions_to_chat", "wants_usage"]

# Completions parameters that mean the same in a chat request (copied when not null).
_KEPT = ("max_tokens", "temperature", "top_p", "stop", "n", "seed", "user", "stream", "presence_penalty",
         "frequency_penalty")
_FINISH_REASONS = frozenset({"stop", "length", "content_filter"})
_DONE = b"data: [DONE]\n\n"
_CHAT_ONLY = "is not supported by the gateway (it serves completions through chat models)"


def completions_to_chat(body: dict[str, Any]) -> dict[str, Any]:
    """A Completions request body as a chat body: the prompt as the one user message."""
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("'model' is required and must be a string", param="model")
    _refuse_unsupported(body)
    chat: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": _prompt(body.get("prompt"))}]}
    for key in _KEPT:
        if body.get(key) is not None:
            chat[key] = body[key]
    wants_usage(body)  # (validates stream_options)
    if body.get("stream") is True:  # the pipeline always prices the stream; the client may not want the chunk
        chat["stream_options"] = {"include_usage": True}
    return chat


def wants_usage(body: dict[str, Any]) -> bool:
    """Whether the client asked for the stream's usage chunk (`stream_options.include_usage`)."""
    options = body.get("stream_options")
    if options is None:
        return False
    if not isinstance(options, dict):
        raise InvalidRequest("'stream_options' must be an object", param="stream_options")
    include = options.get("include_usage")
    if include is not None and not isinstance(include, bool):
        raise InvalidRequest("'stream_options.include_usage' must be a boolean", param="stream_options.include_usage")
    return include is True


def _refuse_unsupported(body: dict[str, Any]) -> None:
    if body.get("suffix") not in (None, ""):
        raise InvalidRequest(f"'suffix' (text insertion) {_CHAT_ONLY}", param="suffix")
    if body.get("echo") is True:
        raise InvalidRequest(f"'echo: true' {_CHAT_ONLY}", param="echo")
    if body.get("logprobs") is not None:
        raise InvalidRequest(f"'logprobs' {_CHAT_ONLY}; send the request to /v1/chat/completions with "
                             "'logprobs' and 'top_logprobs' instead", param="logprobs")
    best_of = body.get("best_of")
    if best_of is not None and (not isinstance(best_of, int) or isinstance(best_of, bool)):
        raise InvalidRequest("'best_of' must be an integer", param="best_of")
    if best_of is not None and best_of > 1:
        raise InvalidRequest(f"'best_of' greater than 1 {_CHAT_ONLY}; use 'n' for several completions",
                             param="best_of")


def _prompt(prompt: Any) -> str:
    if isinstance(prompt, str):
        return prompt
    if not isinstance(prompt, list) or not prompt:
        raise InvalidRequest("'prompt' is required: a string, or a list holding exactly one string", param="prompt")
    if any(not isinstance(p, str) for p in prompt):
        raise InvalidRequest("token-id prompts are not supported by the gateway: send the prompt as text",
                             param="prompt")
    if len(prompt) > 1:
        raise InvalidRequest(f"several prompts in one request are not supported ({len(prompt)} sent): send one "
                             "request per prompt", param="prompt")
    return str(prompt[0])


def _completion_id(chat_id: Any, fallback: str) -> str:
    """`chatcmpl-X` gives `cmpl-X`, so a completion names the chat completion it came from."""
    if not isinstance(chat_id, str) or not chat_id:
        return fallback
    return "cmpl-" + chat_id.removeprefix("chatcmpl-")


def _finish_reason(reason: Any) -> str | None:
    if reason is None:
        return None
    return reason if reason in _FINISH_REASONS else "stop"


def chat_to_completion(completion: dict[str, Any]) -> dict[str, Any]:
    """A `chat.completion` (every choice, its usage with the gateway's cost) as a `text_completion`."""
    choices = []
    for i, choice in enumerate(completion.get("choices") or ()):
        message = choice.get("message") or {}
        text = message.get("content")
        choices.append({"text": text if isinstance(text, str) else "", "index": choice.get("index", i),
                        "logprobs": None, "finish_reason": _finish_reason(choice.get("finish_reason")) or "stop"})
    out: dict[str, Any] = {
        "id": _completion_id(completion.get("id"), "cmpl-gateway"),
        "object": "text_completion",
        "created": completion.get("created"),
        "model": completion.get("model"),
        "choices": choices,
    }
    if completion.get("system_fingerprint") is not None:
        out["system_fingerprint"] = completion["system_fingerprint"]
    out["usage"] = completion.get("usage")
    return out


class CompletionsStream:
    """Translates the pipeline's chat chunk stream into `text_completion` chunks as it goes: one
    chunk per chat chunk that carries text or a finish reason, then the usage chunk (`choices: []`,
    the full usage with cost) if the client asked for it, then `[DONE]`."""

    def __init__(self, model: str, include_usage: bool, completion_id: str, created: int) -> None:
        self._include_usage = include_usage
        self._head: dict[str, Any] = {"id": completion_id, "object": "text_completion", "created": created,
                                      "model": model}
        self._buffer = b""
        self._closed = False

    def feed(self, events: bytes) -> bytes:
        """One or more SSE-framed `chat.completion.chunk` events in, the chunks they make out."""
        if self._closed:
            return b""
        out: list[bytes] = []
        for payload in self._payloads(events):
            if payload.get("error") is not None:  # a failure reported in-band: passed on, and the end
                self._closed = True
                out.append(_event(payload))
                break
            self._follow(payload)
            choices = [_text_choice(choice) for choice in payload.get("choices") or ()]
            choices = [choice for choice in choices if choice is not None]
            if choices:
                out.append(_event({**self._head, "choices": choices}))
        return b"".join(out)

    def end(self, usage: dict[str, Any]) -> bytes:
        """The usage chunk (if asked for) and `[DONE]`."""
        if self._closed:
            return b""
        self._closed = True
        if not self._include_usage:
            return _DONE
        return _event({**self._head, "choices": [], "usage": usage}) + _DONE

    def error(self, exc: GatewayError) -> bytes:
        """One OpenAI-shaped error event, and no `[DONE]` (the openai SDK raises it as an APIError)."""
        if self._closed:
            return b""
        self._closed = True
        return b"data: " + exc.body_bytes() + b"\n\n"

    def _follow(self, payload: dict[str, Any]) -> None:
        """The chunks' id, creation time and model follow the chat stream's."""
        head = self._head
        head["id"] = _completion_id(payload.get("id"), head["id"])
        if isinstance(payload.get("created"), int):
            head["created"] = payload["created"]
        if isinstance(payload.get("model"), str) and payload["model"]:
            head["model"] = payload["model"]

    def _payloads(self, events: bytes) -> list[dict[str, Any]]:
        self._buffer += events.replace(b"\r\n", b"\n")
        *frames, self._buffer = self._buffer.split(b"\n\n")
        payloads: list[dict[str, Any]] = []
        for frame in frames:
            data = b"\n".join(line[5:].strip() for line in frame.split(b"\n") if line.startswith(b"data:"))
            if data and data != b"[DONE]":
                payload = orjson.loads(data)
                if isinstance(payload, dict):
                    payloads.append(payload)
        return payloads


def _text_choice(choice: Any) -> dict[str, Any] | None:
    """A chat chunk's choice as a text_completion chunk's, or None when it carries nothing (a role
    announcement, an empty delta)."""
    if not isinstance(choice, dict):
        return None
    delta = choice.get("delta") or {}
    text = delta.get("content")
    text = text if isinstance(text, str) else ""
    finish = _finish_reason(choice.get("finish_reason"))
    if not text and finish is None:
        return None
    return {"text": text, "index": choice.get("index", 0), "logprobs": None, "finish_reason": finish}


def _event(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"
