"""Scripted behaviour of the fake upstream provider, plus small helpers shared by both wire formats."""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass
from typing import Any

FAULTS: frozenset[str] = frozenset({"400", "401", "429", "500", "503", "timeout", "drop", "malformed", "error_event"})
STATUS_FAULTS: frozenset[str] = frozenset({"400", "401", "429", "500", "503"})

_BOOL_FIELDS = ("omit_usage",)
_FLOAT_FIELDS = ("latency_ms", "ttft_ms", "itl_ms", "hang_s")
_INT_FIELDS = ("output_tokens", "fault_times", "drop_after")
_STR_FIELDS = ("reply", "finish_reason", "fault", "retry_after", "error_message", "service_tier", "fault_service_tier")


@dataclass(frozen=True, slots=True)
class Behaviour:
    """How the fake upstream answers requests for one upstream model id (all fields optional)."""

    reply: str | None = None
    output_tokens: int | None = None
    usage: dict[str, Any] | None = None
    omit_usage: bool = False
    latency_ms: float = 0.0
    ttft_ms: float = 0.0
    itl_ms: float = 0.0
    finish_reason: str | None = None
    tool_calls: list[dict[str, str]] | None = None
    fault: str | None = None
    fault_times: int | None = None
    retry_after: str | None = None
    error_message: str | None = None
    drop_after: int = 2
    hang_s: float = 30.0
    # The service tier the answer reports (OpenAI format); None: the one asked for (`flex`,
    # `priority`), else "default".
    service_tier: str | None = None
    # The fault applies only to requests asking for this service tier (e.g. "flex": a 429
    # "resource unavailable" for flex calls, default calls answered).
    fault_service_tier: str | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Behaviour:
        """Build a Behaviour from a JSON-ish dict; unknown keys or bad values raise ValueError."""
        if not isinstance(data, dict):
            raise ValueError("behaviour must be a JSON object")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown behaviour field(s): {', '.join(unknown)}")
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if value is None:
                if key in _BOOL_FIELDS or key in _FLOAT_FIELDS or key == "drop_after":
                    raise ValueError(f"{key} must not be null")
                kwargs[key] = None
            elif key in _BOOL_FIELDS:
                if not isinstance(value, bool):
                    raise ValueError(f"{key} must be a boolean")
                kwargs[key] = value
            elif key in _FLOAT_FIELDS:
                if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                    raise ValueError(f"{key} must be a non-negative number")
                kwargs[key] = float(value)
            elif key in _INT_FIELDS:
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise ValueError(f"{key} must be a non-negative integer")
                kwargs[key] = value
            elif key in _STR_FIELDS:
                if not isinstance(value, str):
                    raise ValueError(f"{key} must be a string")
                kwargs[key] = value
            elif key == "usage":
                if not isinstance(value, dict):
                    raise ValueError("usage must be an object")
                kwargs[key] = dict(value)
            elif key == "tool_calls":
                kwargs[key] = _parse_tool_calls(value)
        fault = kwargs.get("fault")
        if fault is not None and fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; expected one of {sorted(FAULTS)}")
        return cls(**kwargs)

    def plan(self, model: str) -> ReplyPlan:
        """Resolve the reply text/words/tool calls/finish reason for ``model``."""
        tools = tuple(ToolCall(t["name"], t["arguments"]) for t in self.tool_calls or ())
        if self.output_tokens is not None:
            words = [f"tok{i}" for i in range(self.output_tokens)]
        elif self.reply is not None:
            words = self.reply.split(" ") if self.reply else []
        elif tools:
            words = []
        else:
            words = f"This is a simulated reply from {model}.".split(" ")
        pieces = [w if i == 0 else " " + w for i, w in enumerate(words)]
        text = "".join(pieces) if (words or self.reply is not None) else None
        finish = self.finish_reason or ("tool_calls" if tools else "stop")
        n_words = len(text.split()) if text else 0
        return ReplyPlan(text=text, pieces=pieces, tools=tools, finish_reason=finish, n_words=n_words)

    def reported_tier(self, body: dict[str, Any]) -> str:
        """The service tier an OpenAI-format answer to `body` reports."""
        if self.service_tier is not None:
            return self.service_tier
        asked = body.get("service_tier")
        return asked if asked in ("flex", "priority") else "default"


def _parse_tool_calls(value: Any) -> list[dict[str, str]]:
    if not isinstance(value, list):
        raise ValueError("tool_calls must be a list")
    out: list[dict[str, str]] = []
    for item in value:
        if not isinstance(item, dict) or set(item) - {"name", "arguments"} or "name" not in item:
            raise ValueError('each tool call must be {"name": str, "arguments": str}')
        args = item.get("arguments", "{}")
        if not isinstance(item["name"], str) or not isinstance(args, str):
            raise ValueError("tool call name and arguments must be strings")
        out.append({"name": item["name"], "arguments": args})
    return out


@dataclass(frozen=True, slots=True)
class ToolCall:
    name: str
    arguments: str

    def arg_pieces(self, size: int = 16) -> list[str]:
        """The arguments JSON split into streaming fragments."""
        a = self.arguments
        return [a[i : i + size] for i in range(0, len(a), size)] or [""]


@dataclass(frozen=True, slots=True)
class ReplyPlan:
    """What to send: ``text`` (None = no text part), streaming ``pieces`` (concatenate to text)."""

    text: str | None
    pieces: list[str]
    tools: tuple[ToolCall, ...]
    finish_reason: str
    n_words: int


@dataclass(slots=True)
class Turn:
    """Everything a format handler needs for one request."""

    model: str
    body: dict[str, Any]
    record: dict[str, Any]
    behaviour: Behaviour
    plan: ReplyPlan
    fault: str | None
    seq: int


async def pause(ms: float) -> None:
    """Sleep ``ms`` milliseconds; zero/negative does not yield at all."""
    if ms > 0:
        await asyncio.sleep(ms / 1000.0)


def _text_words(content: Any) -> int:
    if isinstance(content, str):
        return len(content.split())
    if isinstance(content, list):
        n = 0
        for part in content:
            if isinstance(part, dict):
                text = part.get("text")
                if isinstance(text, str) and part.get("type", "text") == "text":
                    n += len(text.split())
        return n
    return 0


def count_input_tokens(body: dict[str, Any], include_system: bool = False) -> int:
    """Default prompt-token estimate: words in text content (+ ``system``) plus 4 per message."""
    messages = body.get("messages")
    n = 0
    if isinstance(messages, list):
        for msg in messages:
            if isinstance(msg, dict):
                n += 4 + _text_words(msg.get("content"))
    if include_system:
        n += _text_words(body.get("system"))
    return n
