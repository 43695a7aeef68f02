"""Pure translation between OpenAI chat requests/responses and Anthropic's Messages API."""

from __future__ import annotations

import time
from types import MappingProxyType
from typing import Any

import orjson

from gateway.config.settings import ModelSpec
from gateway.errors import InvalidRequest
from gateway.money.pricing import Usage

__all__ = ["FINISH_REASONS", "to_anthropic_request", "to_openai_completion"]

FINISH_REASONS = MappingProxyType({
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
    "pause_turn": "stop",
})
_DEFAULT_MAX_TOKENS = 4096


def _text_parts(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    for part in content or ():
        if not isinstance(part, dict):
            continue
        if part.get("type") == "text":
            block: dict[str, Any] = {"type": "text", "text": str(part.get("text") or "")}
            if "cache_control" in part:
                block["cache_control"] = part["cache_control"]
            blocks.append(block)
        elif part.get("type") == "image_url":
            blocks.append(_image_block(part))
    return blocks


def _image_block(part: dict[str, Any]) -> dict[str, Any]:
    url = str((part.get("image_url") or {}).get("url") or "")
    if url.startswith("data:") and ";base64," in url:
        media_type, data = url[5:].split(";base64,", 1)
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    return {"type": "image", "source": {"type": "url", "url": url}}


def _arguments(raw: Any) -> Any:
    if not isinstance(raw, str) or not raw:
        return {}
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidRequest("tool call arguments must be valid JSON", param="messages") from None


def _message_blocks(message: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    role = message.get("role")
    if role == "tool":
        result = {
            "type": "tool_result",
            "tool_use_id": str(message.get("tool_call_id") or ""),
            "content": _text_parts(message.get("content")),
        }
        return "user", [result]
    blocks = _text_parts(message.get("content"))
    for call in message.get("tool_calls") or ():
        fn = call.get("function") or {}
        blocks.append(
            {"type": "tool_use", "id": call.get("id"), "name": fn.get("name"), "input": _arguments(fn.get("arguments"))}
        )
    return ("assistant" if role == "assistant" else "user"), blocks


def _tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    mapped: dict[str, Any] | None = None
    if choice == "auto":
        mapped = {"type": "auto"}
    elif choice == "required":
        mapped = {"type": "any"}
    elif choice == "none":
        mapped = {"type": "none"}
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        mapped = {"type": "tool", "name": choice["function"].get("name")}
    if parallel is False:
        mapped = {**(mapped or {"type": "auto"}), "disable_parallel_tool_use": True}
    return mapped


def to_anthropic_request(model: ModelSpec, body: dict[str, Any]) -> dict[str, Any]:
    if body.get("n") not in (None, 1):
        raise InvalidRequest("n > 1 is not supported for Anthropic models", param="n")
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") not in (None, "text"):
        raise InvalidRequest("response_format is not supported for Anthropic models", param="response_format")
    system: list[dict[str, Any]] = []
    messages: list[dict[str, Any]] = []
    for message in body["messages"]:
        if message.get("role") in ("system", "developer"):
            system += _text_parts(message.get("content"))
            continue
        role, blocks = _message_blocks(message)
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"] += blocks  # Anthropic needs alternating roles
        else:
            messages.append({"role": role, "content": blocks})
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    out: dict[str, Any] = {
        "model": model.upstream_model,
        "messages": messages,
        "max_tokens": max_tokens or model.max_output_tokens or _DEFAULT_MAX_TOKENS,
    }
    if system:
        out["system"] = system
    for key in ("temperature", "top_p", "top_k", "stream"):
        if body.get(key) is not None:
            out[key] = body[key]
    stop = body.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if body.get("tools"):
        out["tools"] = [
            {
                "name": t["function"].get("name"),
                "description": t["function"].get("description", ""),
                "input_schema": t["function"].get("parameters") or {"type": "object", "properties": {}},
            }
            for t in body["tools"]
            if isinstance(t, dict) and isinstance(t.get("function"), dict)
        ]
    choice = _tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
    if choice and body.get("tools"):
        out["tool_choice"] = choice
    if isinstance(body.get("user"), str):
        out["metadata"] = {"user_id": body["user"]}
    return out


def to_openai_completion(data: dict[str, Any]) -> tuple[dict[str, Any], Usage | None]:
    text: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in data.get("content") or ():
        if block.get("type") == "text":
            text.append(str(block.get("text") or ""))
        elif block.get("type") == "tool_use":
            args = orjson.dumps(block.get("input") or {}).decode()
            fn = {"name": block.get("name"), "arguments": args}
            calls.append({"id": block.get("id"), "type": "function", "function": fn})
    message: dict[str, Any] = {"role": "assistant", "content": "".join(text) if text or not calls else None}
    if calls:
        message["tool_calls"] = calls
    raw_usage = data.get("usage")
    usage = Usage.from_anthropic(raw_usage) if isinstance(raw_usage, dict) else None
    body = {
        "id": data.get("id") or "msg",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": data.get("model"),
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": FINISH_REASONS.get(str(data.get("stop_reason")), "stop"),
                "logprobs": None,
            }
        ],
    }
    return body, usage
