"""Anthropic's Messages API (`POST /v1/messages`) translated to and from the pipeline's chat form.

Pure: `messages_to_chat` validates a Messages request and gives the chat body the pipeline runs on;
`chat_to_message` and `MessagesStream` turn its completion (or chunk stream) into an Anthropic message
(or SSE events), usage moved to Anthropic's convention (cache outside `input_tokens`), `cost` kept.
"""

from __future__ import annotations

import uuid
from types import MappingProxyType
from typing import Any, TypeGuard

import orjson

from gateway.errors import GatewayError, InvalidRequest

__all__ = ["MessagesStream", "anthropic_error_type", "anthropic_usage", "chat_to_message", "error_body",
           "messages_to_chat"]

_TOOL_CHOICES = MappingProxyType({"auto": "auto", "any": "required", "none": "none"})
_STOP_REASONS = MappingProxyType({"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use",
                                  "function_call": "tool_use", "content_filter": "refusal"})
_ERROR_TYPES = MappingProxyType({
    400: "invalid_request_error", 401: "authentication_error", 402: "billing_error", 403: "permission_error",
    404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error", 503: "overloaded_error",
    504: "timeout_error", 529: "overloaded_error",
})
_DROPPED_BLOCKS = frozenset({"thinking", "redacted_thinking"})  # they only mean something to Anthropic


# --- request: Anthropic Messages -> OpenAI chat ------------------------------------------------


def _fail(message: str, param: str | None) -> InvalidRequest:
    return InvalidRequest(message, param=param)


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _str(value: Any, param: str) -> str:
    if not isinstance(value, str):
        raise _fail(f"'{param}' must be a string", param)
    return value


def _dict(value: Any, param: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail(f"'{param}' must be an object", param)
    return value


def _block_type(block: Any, where: str) -> str:
    if not isinstance(block, dict) or not isinstance(block.get("type"), str):
        raise _fail(f"'{where}' must be a content block object with a string 'type'", where)
    kind: str = block["type"]
    if kind == "document":
        raise _fail("document blocks are only supported on Anthropic models", where)
    return kind


def _unsupported(kind: str, where: str, role: str) -> InvalidRequest:
    return _fail(f"content block type '{kind}' is not supported in {role} messages", f"{where}.type")


def _text_part(block: dict[str, Any], where: str) -> dict[str, Any]:
    part: dict[str, Any] = {"type": "text", "text": _str(block.get("text"), f"{where}.text")}
    if block.get("cache_control") is not None:
        part["cache_control"] = block["cache_control"]
    return part


def _image_part(block: dict[str, Any], where: str) -> dict[str, Any]:
    source = _dict(block.get("source"), f"{where}.source")
    kind = source.get("type")
    if kind == "base64":
        media_type = _str(source.get("media_type"), f"{where}.source.media_type")
        data = _str(source.get("data"), f"{where}.source.data")
        return {"type": "image_url", "image_url": {"url": f"data:{media_type};base64,{data}"}}
    if kind == "url":
        return {"type": "image_url", "image_url": {"url": _str(source.get("url"), f"{where}.source.url")}}
    raise _fail(f"image source type '{kind}' is not supported (use 'base64' or 'url')", f"{where}.source.type")


def _collapse(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    """One plain text part is sent as a string; anything else keeps its parts (and breakpoints)."""
    plain = len(parts) == 1 and parts[0]["type"] == "text" and "cache_control" not in parts[0]
    return str(parts[0]["text"]) if plain else parts


def _joined(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    """Text parts as one string, unless a part carries a cache breakpoint (then the parts)."""
    return parts if any("cache_control" in part for part in parts) else "\n".join(part["text"] for part in parts)


def _system(system: Any) -> list[dict[str, Any]]:
    if system is None or isinstance(system, str):
        return [{"role": "system", "content": system}] if system else []
    if not isinstance(system, list):
        raise _fail("'system' must be a string or an array of text blocks", "system")
    parts = []
    for i, block in enumerate(system):
        if _block_type(block, f"system[{i}]") != "text":
            raise _fail(f"'system[{i}]' must be a text block", f"system[{i}].type")
        parts.append(_text_part(block, f"system[{i}]"))
    return [{"role": "system", "content": _joined(parts)}] if parts else []


def _tool_result(block: dict[str, Any], where: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A `tool` message, and the images the result carried (chat tool messages hold only text)."""
    call_id = _str(block.get("tool_use_id"), f"{where}.tool_use_id")
    content = block.get("content")
    if content is None or isinstance(content, str):
        content = [{"type": "text", "text": content}] if content else []
    elif not isinstance(content, list):
        raise _fail(f"'{where}.content' must be a string or an array of blocks", f"{where}.content")
    parts: list[dict[str, Any]] = []
    images: list[dict[str, Any]] = []
    for k, inner in enumerate(content):
        at = f"{where}.content[{k}]"
        kind = _block_type(inner, at)
        if kind == "text":
            parts.append(_text_part(inner, at))
        elif kind == "image":
            images.append(_image_part(inner, at))
        else:
            raise _unsupported(kind, at, "tool_result")
    if block.get("cache_control") is not None and parts:
        parts[-1] = {**parts[-1], "cache_control": block["cache_control"]}
    return {"role": "tool", "tool_call_id": call_id, "content": _joined(parts)}, images


def _user(blocks: list[Any], where: str) -> list[dict[str, Any]]:
    """Tool results become `tool` messages, placed before the rest of the user's message."""
    tools: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    tool_images: list[dict[str, Any]] = []
    for j, block in enumerate(blocks):
        at = f"{where}.content[{j}]"
        kind = _block_type(block, at)
        if kind == "text":
            parts.append(_text_part(block, at))
        elif kind == "image":
            parts.append(_image_part(block, at))
        elif kind == "tool_result":
            message, images = _tool_result(block, at)
            tools.append(message)
            tool_images += images
        else:
            raise _unsupported(kind, at, "user")
    rest = tool_images + parts
    if rest or not tools:
        tools.append({"role": "user", "content": _collapse(rest) if rest else ""})
    return tools


def _tool_call(block: dict[str, Any], where: str) -> dict[str, Any]:
    arguments = orjson.dumps(block.get("input") or {}).decode()
    fn = {"name": _str(block.get("name"), f"{where}.name"), "arguments": arguments}
    return {"id": _str(block.get("id"), f"{where}.id"), "type": "function", "function": fn}


def _assistant(blocks: list[Any], where: str) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    for j, block in enumerate(blocks):
        at = f"{where}.content[{j}]"
        kind = _block_type(block, at)
        if kind == "text":
            parts.append(_text_part(block, at))
        elif kind == "tool_use":
            calls.append(_tool_call(block, at))
        elif kind not in _DROPPED_BLOCKS:
            raise _unsupported(kind, at, "assistant")
    message: dict[str, Any] = {"role": "assistant", "content": _collapse(parts) if parts else (None if calls else "")}
    if calls:
        message["tool_calls"] = calls
    return [message]


def _message(message: Any, where: str) -> list[dict[str, Any]]:
    role = _dict(message, where).get("role")
    if role == "system":  # (not in Anthropic's API, yet sent by Claude Code for models it does not know)
        return _system(message.get("content"))
    if role not in ("user", "assistant"):
        raise _fail(f"'{where}.role' must be 'user', 'assistant' or 'system', not {role!r}", f"{where}.role")
    content = message.get("content")
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    if not isinstance(content, list):
        raise _fail(f"'{where}.content' must be a string or an array of content blocks", f"{where}.content")
    return _assistant(content, where) if role == "assistant" else _user(content, where)


def _mark_last(messages: list[dict[str, Any]], cache_control: Any) -> None:
    """Top-level `cache_control`: a breakpoint on the last text of the last message."""
    if cache_control is None or not _dict(cache_control, "cache_control"):
        return
    last = messages[-1]
    content = last.get("content")
    if isinstance(content, str) and content:
        last["content"] = [{"type": "text", "text": content, "cache_control": cache_control}]
    elif isinstance(content, list):
        texts = [i for i, part in enumerate(content) if part["type"] == "text"]
        if texts:
            content[texts[-1]] = {**content[texts[-1]], "cache_control": cache_control}


def _tools(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise _fail("'tools' must be an array", "tools")
    out = []
    for i, tool in enumerate(tools):
        where = f"tools[{i}]"
        if _dict(tool, where).get("type") not in (None, "custom"):
            raise _fail(f"server tool '{tool.get('name')}' ({tool['type']}) is not supported by the gateway; "
                        "only custom tools are", where)
        if not isinstance(tool.get("name"), str) or not tool["name"]:
            raise _fail(f"'{where}.name' must be a non-empty string", f"{where}.name")
        schema = _dict(tool.get("input_schema"), f"{where}.input_schema")
        fn: dict[str, Any] = {"name": tool["name"], "parameters": schema}
        if tool.get("description") is not None:
            fn["description"] = _str(tool["description"], f"{where}.description")
        if isinstance(tool.get("strict"), bool):
            fn["strict"] = tool["strict"]
        out.append({"type": "function", "function": fn})
    return out


def _tool_choice(choice: Any) -> dict[str, Any]:
    if choice is None:
        return {}
    kind = _dict(choice, "tool_choice").get("type")
    if kind == "tool":
        out: dict[str, Any] = {"tool_choice": {"type": "function", "function": {
            "name": _str(choice.get("name"), "tool_choice.name")}}}
    elif isinstance(kind, str) and kind in _TOOL_CHOICES:
        out = {"tool_choice": _TOOL_CHOICES[kind]}
    else:
        raise _fail("'tool_choice.type' must be one of 'auto', 'any', 'tool', 'none'", "tool_choice.type")
    if choice.get("disable_parallel_tool_use") is True:
        out["parallel_tool_calls"] = False
    return out


def _thinking(thinking: Any) -> dict[str, Any]:
    """An extended-thinking budget becomes a reasoning effort; other modes leave the model's default."""
    if thinking is None or _dict(thinking, "thinking").get("type") != "enabled":
        return {}
    budget = thinking.get("budget_tokens")
    if not _is_int(budget):
        raise _fail("'thinking.budget_tokens' must be an integer", "thinking.budget_tokens")
    return {"reasoning_effort": "low" if budget < 4096 else "medium" if budget < 16384 else "high"}


def _sampling(body: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    stop = body.get("stop_sequences") or []
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        raise _fail("'stop_sequences' must be an array of strings", "stop_sequences")
    if stop:
        out["stop"] = list(stop)
    for key in ("temperature", "top_p"):
        if body.get(key) is not None:
            out[key] = body[key]
    stream = body.get("stream")
    if stream is not None:
        if not isinstance(stream, bool):
            raise _fail("'stream' must be a boolean", "stream")
        out["stream"] = stream
        if stream:
            out["stream_options"] = {"include_usage": True}
    metadata = _dict(body.get("metadata") or {}, "metadata")
    if isinstance(metadata.get("user_id"), str):
        out["user"] = metadata["user_id"]
    return out


def messages_to_chat(body: dict[str, Any]) -> dict[str, Any]:
    """An Anthropic Messages request body as the OpenAI chat body the pipeline runs on."""
    if not isinstance(body, dict):
        raise _fail("the request body must be a JSON object", None)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _fail("'model' is required and must be a string", "model")
    max_tokens = body.get("max_tokens")
    if not _is_int(max_tokens) or max_tokens < 1:
        raise _fail("'max_tokens' is required and must be a positive integer", "max_tokens")
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise _fail("'messages' must be a non-empty array", "messages")
    messages = _system(body.get("system"))
    for i, message in enumerate(raw):
        messages += _message(message, f"messages[{i}]")
    _mark_last(messages, body.get("cache_control"))
    out: dict[str, Any] = {"model": model, "messages": messages, "max_tokens": max_tokens, **_sampling(body)}
    tools, choice = _tools(body.get("tools") or []), _tool_choice(body.get("tool_choice"))
    if tools:  # a tool_choice without tools means nothing (and OpenAI refuses it)
        out["tools"] = tools
        out.update(choice)
    out.update(_thinking(body.get("thinking")))
    return out


# --- response: OpenAI chat completion -> Anthropic message ------------------------------------


def _count(value: Any) -> int:
    return value if _is_int(value) and value > 0 else 0


def anthropic_usage(usage: dict[str, Any]) -> dict[str, Any]:
    """OpenAI-convention usage (cache reads/writes inside prompt_tokens) in Anthropic's convention
    (outside input_tokens), with the gateway's `cost` and `cost_details` when present."""
    prompt = _count(usage.get("prompt_tokens"))
    details = _obj(usage.get("prompt_tokens_details"))
    cached = min(_count(details.get("cached_tokens")) or _count(usage.get("prompt_cache_hit_tokens")), prompt)
    hour = _count(details.get("cache_write_1h_tokens"))
    writes = max(_count(details.get("cache_write_tokens")) or _count(details.get("cache_creation_tokens")), hour)
    writes = min(writes, prompt - cached)
    hour = min(hour, writes)
    out: dict[str, Any] = {
        "input_tokens": prompt - cached - writes,
        "cache_creation_input_tokens": writes,
        "cache_read_input_tokens": cached,
        "cache_creation": {"ephemeral_5m_input_tokens": writes - hour, "ephemeral_1h_input_tokens": hour},
        "output_tokens": _count(usage.get("completion_tokens")),
    }
    out.update({key: usage[key] for key in ("cost", "cost_details") if key in usage})
    return out


def _stop_reason(finish: Any, used_tools: bool) -> str:
    reason = _STOP_REASONS.get(finish, "end_turn") if isinstance(finish, str) else "end_turn"
    return "tool_use" if used_tools and reason == "end_turn" else reason


def _message_id(completion_id: Any) -> str:
    raw = completion_id if isinstance(completion_id, str) and completion_id else uuid.uuid4().hex
    return raw if raw.startswith("msg_") else "msg_" + raw.removeprefix("chatcmpl-")


def _tool_id(message_id: str, index: int) -> str:
    return f"toolu_{message_id.removeprefix('msg_')}_{index}"


def _tool_input(arguments: Any) -> dict[str, Any]:
    try:
        value = orjson.loads(arguments) if isinstance(arguments, str | bytes) else None
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def chat_to_message(completion: dict[str, Any], model: str) -> dict[str, Any]:
    """The pipeline's `chat.completion` (its first choice) as an Anthropic `message`."""
    message_id = _message_id(completion.get("id"))
    choices = completion.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    message = _obj(choice.get("message"))
    text = message.get("content") or message.get("refusal")
    content: list[dict[str, Any]] = [{"type": "text", "text": text}] if isinstance(text, str) and text else []
    calls = [call for call in message.get("tool_calls") or () if isinstance(call, dict)]
    for i, call in enumerate(calls):
        fn = _obj(call.get("function"))
        content.append({"type": "tool_use", "id": call.get("id") or _tool_id(message_id, i),
                        "name": fn.get("name") or "", "input": _tool_input(fn.get("arguments"))})
    return {"id": message_id, "type": "message", "role": "assistant", "model": model, "content": content,
            "stop_reason": _stop_reason(choice.get("finish_reason"), bool(calls)), "stop_sequence": None,
            "usage": anthropic_usage(_obj(completion.get("usage")))}


# --- errors ------------------------------------------------------------------------------------


def anthropic_error_type(status: int) -> str:
    """Anthropic's error `type` for an HTTP status."""
    return _ERROR_TYPES.get(status) or ("invalid_request_error" if 400 <= status < 500 else "api_error")


def _error(exc: GatewayError) -> dict[str, Any]:
    return {"type": "error", "error": {"type": anthropic_error_type(exc.status_code), "message": exc.message}}


def error_body(exc: GatewayError) -> bytes:
    """A `GatewayError` as an Anthropic error body."""
    return orjson.dumps(_error(exc))


# --- stream: OpenAI chat.completion.chunk events -> Anthropic SSE events ------------------------


class MessagesStream:
    """Translates the pipeline's OpenAI stream into Anthropic's SSE events as it goes: one
    `message_start` (and a `ping`), then content blocks (text, then one per tool call), and at
    `end` the `message_delta` carrying the stop reason and the full usage, then `message_stop`."""

    def __init__(self, model: str, message_id: str) -> None:
        self.model = model
        self.message_id = message_id
        self._out: list[tuple[str, dict[str, Any]]] = []  # events not yet returned
        self._started = False
        self._done = False
        self._blocks = 0  # content blocks opened so far; the open one (if any) is the last
        self._open: str | int | None = None  # "text", or the OpenAI index of the open tool call
        self._tools: dict[int, int] = {}  # OpenAI tool-call index -> Anthropic block index
        self._finish: str | None = None

    def _emit(self, kind: str, **fields: Any) -> None:
        self._out.append((kind, {"type": kind, **fields}))

    def _flush(self) -> bytes:
        out, self._out = self._out, []
        return b"".join(b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n" for kind, data in out)

    def _begin(self) -> None:
        if not self._started:
            self._started = True
            self._emit("message_start", message={
                "id": self.message_id, "type": "message", "role": "assistant", "model": self.model, "content": [],
                "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 0, "output_tokens": 0}})
            self._emit("ping")

    def _close(self) -> None:
        if self._open is not None:
            self._emit("content_block_stop", index=self._blocks - 1)
            self._open = None

    def _start(self, key: str | int, block: dict[str, Any]) -> None:
        self._close()
        self._emit("content_block_start", index=self._blocks, content_block=block)
        self._open = key
        self._blocks += 1

    def _tool_call(self, call: dict[str, Any]) -> None:
        k = call["index"] if _is_int(call.get("index")) else 0
        fn = _obj(call.get("function"))
        if k not in self._tools:
            tool_id = call.get("id") or _tool_id(self.message_id, k)
            self._start(k, {"type": "tool_use", "id": tool_id, "name": fn.get("name") or "", "input": {}})
            self._tools[k] = self._blocks - 1
        if isinstance(fn.get("arguments"), str) and fn["arguments"]:
            delta = {"type": "input_json_delta", "partial_json": fn["arguments"]}
            self._emit("content_block_delta", index=self._tools[k], delta=delta)

    def _chunk(self, chunk: dict[str, Any]) -> None:
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = _obj(choice.get("delta"))
            text = delta.get("content")
            if isinstance(text, str) and text:
                if self._open != "text":
                    self._start("text", {"type": "text", "text": ""})
                self._emit("content_block_delta", index=self._blocks - 1, delta={"type": "text_delta", "text": text})
            for call in delta.get("tool_calls") or ():
                if isinstance(call, dict):
                    self._tool_call(call)
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]

    def feed(self, events: bytes) -> bytes:
        """SSE-framed `chat.completion.chunk` events (one or more) -> the Anthropic events for them."""
        if self._done:
            return b""
        self._begin()
        for line in events.splitlines():
            payload = line[5:].strip() if line.startswith(b"data:") else b""
            if payload and payload != b"[DONE]" and isinstance(chunk := orjson.loads(payload), dict):
                self._chunk(chunk)
        return self._flush()

    def end(self, usage: dict[str, Any]) -> bytes:
        """The stream completed: close the open block, then the stop reason and the full usage."""
        if self._done:
            return b""
        self._done = True
        self._begin()
        self._close()
        delta = {"stop_reason": _stop_reason(self._finish, bool(self._tools)), "stop_sequence": None}
        self._emit("message_delta", delta=delta, usage=anthropic_usage(usage))
        self._emit("message_stop")
        return self._flush()

    def error(self, exc: GatewayError) -> bytes:
        """The stream failed after it started: one `error` event, and nothing after it."""
        self._done = True
        self._out = [("error", _error(exc))]
        return self._flush()
