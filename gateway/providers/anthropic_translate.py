"""Pure translation between OpenAI chat requests/responses and Anthropic's Messages API."""

from __future__ import annotations

import time
from types import MappingProxyType
from typing import Any

import orjson

from gateway.config.settings import ModelSpec
from gateway.errors import InvalidRequest
from gateway.money.pricing import Usage
from gateway.providers.anthropic_options import (
    DEFAULT_MAX_TOKENS,
    AnswerShape,
    from_legacy,
    refuse_unsupported,
    thinking_budget,
    thinking_max_tokens,
    tools_and_choice,
    without_sampling,
)

__all__ = ["FINISH_REASONS", "AnswerShape", "finish_reason", "to_anthropic_request", "to_openai_completion"]

FINISH_REASONS = MappingProxyType({
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
    "pause_turn": "stop",
})
_PLAIN = AnswerShape()


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


def _thinking_blocks(blocks: Any) -> list[dict[str, Any]]:
    """An assistant turn's `thinking_blocks` (as answers carry them), sent back as Anthropic wants
    them before the turn's tool calls when thinking is on."""
    out: list[dict[str, Any]] = []
    for block in blocks if isinstance(blocks, list) else ():
        if isinstance(block, dict) and block.get("type") == "thinking":
            out.append({"type": "thinking", "thinking": block.get("thinking"), "signature": block.get("signature")})
        elif isinstance(block, dict) and block.get("type") == "redacted_thinking":
            out.append({"type": "redacted_thinking", "data": block.get("data")})
    return out


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
    if role == "assistant" and message.get("thinking_blocks"):
        blocks = _thinking_blocks(message["thinking_blocks"]) + blocks
    for call in message.get("tool_calls") or ():
        fn = call.get("function") or {}
        blocks.append(
            {"type": "tool_use", "id": call.get("id"), "name": fn.get("name"), "input": _arguments(fn.get("arguments"))}
        )
    return ("assistant" if role == "assistant" else "user"), blocks


def _conversation(messages: list[Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The system blocks and the alternating user/assistant messages."""
    system: list[dict[str, Any]] = []
    out: list[dict[str, Any]] = []
    for message in messages:
        if message.get("role") in ("system", "developer"):
            system += _text_parts(message.get("content"))
            continue
        role, blocks = _message_blocks(message)
        if out and out[-1]["role"] == role:
            out[-1]["content"] += blocks  # Anthropic needs alternating roles
        else:
            out.append({"role": role, "content": blocks})
    return system, out


def to_anthropic_request(model: ModelSpec, body: dict[str, Any]) -> tuple[dict[str, Any], AnswerShape]:
    """The Messages request for an OpenAI chat body (its `n` is the caller's to fan out), and how
    to read its answer (rules: `gateway.providers.anthropic_options`)."""
    refuse_unsupported(model, body)
    legacy = body.get("functions") is not None
    body = from_legacy(body)
    system, messages = _conversation(body["messages"])
    asked = body.get("max_completion_tokens") or body.get("max_tokens")
    out: dict[str, Any] = {
        "model": model.upstream_model,
        "messages": messages,
        "max_tokens": asked or model.max_output_tokens or DEFAULT_MAX_TOKENS,
    }
    if system:
        out["system"] = system
    for key in ("temperature", "top_p", "top_k", "stream"):
        if body.get(key) is not None:
            out[key] = body[key]
    stop = body.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    tools, choice, shape = tools_and_choice(body, legacy)
    if tools:
        out["tools"] = tools
    if choice is not None and tools:
        out["tool_choice"] = choice
    budget = thinking_budget(body, out.get("tool_choice"))
    if budget is not None:
        out["thinking"] = {"type": "enabled", "budget_tokens": budget}
        out["max_tokens"] = thinking_max_tokens(model, asked, budget)
        without_sampling(out)
    if isinstance(body.get("user"), str):
        out["metadata"] = {"user_id": body["user"]}
    return out, shape


def finish_reason(stop_reason: Any, user_calls: bool, shape: AnswerShape) -> str:
    """OpenAI's finish_reason: a structured-output tool call is an answer ("stop"); a legacy
    request's call is a "function_call"."""
    reason = FINISH_REASONS.get(str(stop_reason), "stop")
    if reason == "tool_calls" and not user_calls:
        return "stop"
    if reason == "tool_calls" and shape.legacy:
        return "function_call"
    return reason


def _message(text: list[str], calls: list[dict[str, Any]], structured: str | None, legacy: bool) -> dict[str, Any]:
    if structured is not None:
        content: str | None = structured  # the answer itself (text around it is not the answer)
    else:
        content = "".join(text) if text or not calls else None
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if calls and legacy:
        message["function_call"] = calls[0]["function"]  # (one at most: parallel calls are off)
    elif calls:
        message["tool_calls"] = calls
    return message


def _with_thinking(message: dict[str, Any], blocks: list[dict[str, Any]]) -> dict[str, Any]:
    """The thinking text as `reasoning_content`, and the blocks (signatures included) as
    `thinking_blocks`, to be sent back with the turn."""
    if blocks:
        message["reasoning_content"] = "".join(str(b.get("thinking") or "") for b in blocks)
        message["thinking_blocks"] = blocks
    return message


def to_openai_completion(data: dict[str, Any], shape: AnswerShape = _PLAIN) -> tuple[dict[str, Any], Usage | None]:
    text: list[str] = []
    calls: list[dict[str, Any]] = []
    thinking: list[dict[str, Any]] = []
    structured: str | None = None
    for block in data.get("content") or ():
        kind = block.get("type")
        if kind == "text":
            text.append(str(block.get("text") or ""))
        elif kind in ("thinking", "redacted_thinking"):
            thinking += _thinking_blocks([block])
        elif kind == "tool_use":
            args = orjson.dumps(block.get("input") or {}).decode()
            if block.get("name") == shape.json_tool and structured is None:
                structured = args
                continue
            fn = {"name": block.get("name"), "arguments": args}
            calls.append({"id": block.get("id"), "type": "function", "function": fn})
    message = _with_thinking(_message(text, calls, structured, shape.legacy), thinking)
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
                "finish_reason": finish_reason(data.get("stop_reason"), bool(calls), shape),
                "logprobs": None,
            }
        ],
    }
    return body, usage
