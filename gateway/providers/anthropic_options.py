"""The Chat Completions options that Anthropic's Messages API has no field for, in its terms.

Rules (each one a documented choice, shared by streamed and non-streamed requests):

* Refused with a 400, never dropped: `logprobs: true` / `top_logprobs` (Anthropic returns none),
  `n > 1` with `stream` (one stream cannot carry n answers), `tools` together with the legacy
  `functions`, and an unknown `reasoning_effort`.
* **Structured output** (`response_format` `json_object` / `json_schema`) is a tool whose input is
  the answer: named after the schema (`json_output` for `json_object`), its `input_schema` the
  schema (`{"type": "object"}` for `json_object`). Without usable tools of the client's it is forced
  (`tool_choice: {"type": "tool"}`); next to the client's tools with `tool_choice` auto it is one of
  them and `tool_choice` becomes `any` (the model answers in JSON or calls a tool of the client's).
  If it answers and calls tools of the client's at once, the answer is the content and the calls
  are `tool_calls`. A `tool_choice` that forces a tool of the client's (`required` or a named one)
  wins: no structured tool is added. `strict` is not enforced by Anthropic.
* **reasoning_effort** is extended thinking with `THINKING_BUDGETS[effort]` tokens ("none": no
  thinking). `max_tokens` becomes the budget plus the output asked for (`max_completion_tokens`,
  else `max_tokens`); with none asked, the model's max output if it exceeds the budget, else the
  budget + 4,096. Anthropic refuses `temperature` and `top_k` with thinking (and `top_p` under
  0.95): they are not sent. Thinking tokens are inside Anthropic's `output_tokens`, billed as output.
* **A forced tool turns thinking off** (Anthropic refuses `tool_choice` `any`/`tool` with
  thinking): structured output, `tool_choice` `required` or a named tool, or a named legacy
  `function_call`, take precedence over `reasoning_effort`, which that request then ignores.
* **Legacy `functions` / `function_call`** become tools and `tool_choice` (`{"name": N}` forces N);
  one call at most (`disable_parallel_tool_use`), reported as `message.function_call` with
  finish_reason "function_call". Legacy turns in the history (an assistant `function_call`, a
  `function` message) become tool calls and results, paired by generated ids.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from gateway.config.settings import ModelSpec
from gateway.errors import InvalidRequest

__all__ = [
    "DEFAULT_MAX_TOKENS", "JSON_OBJECT_TOOL", "THINKING_BUDGETS", "AnswerShape", "from_legacy", "refuse_unsupported",
    "thinking_budget", "thinking_max_tokens", "tools_and_choice", "with_thinking", "without_sampling",
]

# reasoning_effort -> Anthropic `thinking.budget_tokens` (Anthropic's minimum budget is 1,024)
THINKING_BUDGETS: Mapping[str, int] = MappingProxyType({"minimal": 1024, "low": 1024, "medium": 4096, "high": 16384})
_NO_THINKING = "none"
JSON_OBJECT_TOOL = "json_output"  # the structured-output tool's name for `json_object`
_FORCING = frozenset({"any", "tool"})  # Anthropic tool_choice types that thinking cannot go with
_TOP_P_WITH_THINKING = 0.95
DEFAULT_MAX_TOKENS = 4096


@dataclass(frozen=True, slots=True)
class AnswerShape:
    """How an Anthropic answer reads back into Chat Completions."""

    json_tool: str | None = None  # the structured-output tool: its input is the message's content
    legacy: bool = False  # the request used `functions`: report `function_call`, not `tool_calls`


def refuse_unsupported(model: ModelSpec, body: Mapping[str, Any]) -> None:
    """A 400 for what an Anthropic model cannot do, rather than an answer without it."""
    if body.get("logprobs") or body.get("top_logprobs"):
        param = "logprobs" if body.get("logprobs") else "top_logprobs"
        raise InvalidRequest(f"model '{model.name}' (Anthropic) cannot return logprobs", param=param)
    if body.get("stream") and (body.get("n") or 1) > 1:
        raise InvalidRequest("n > 1 is not supported with stream for Anthropic models", param="n")
    if body.get("functions") is not None and body.get("tools") is not None:
        raise InvalidRequest("send either 'tools' or the legacy 'functions', not both", param="functions")
    effort = body.get("reasoning_effort")
    if effort is not None and effort != _NO_THINKING and effort not in THINKING_BUDGETS:
        allowed = ", ".join([_NO_THINKING, *THINKING_BUDGETS])
        raise InvalidRequest(f"'reasoning_effort' must be one of {allowed}", param="reasoning_effort")


def _legacy_choice(call: Any) -> Any:
    if call is None or call in ("auto", "none"):
        return call
    if isinstance(call, dict) and isinstance(call.get("name"), str):
        return {"type": "function", "function": {"name": call["name"]}}
    raise InvalidRequest("'function_call' must be \"auto\", \"none\" or {\"name\": ...}", param="function_call")


def _legacy_messages(messages: list[Any]) -> list[Any]:
    """Assistant `function_call`s as tool calls, `function` messages as the results of the last one."""
    out: list[Any] = []
    last_id = ""
    for i, message in enumerate(messages):
        if message.get("role") == "assistant" and isinstance(message.get("function_call"), dict):
            last_id = f"call_legacy_{i}"
            fn = message["function_call"]
            call = {"id": last_id, "type": "function",
                    "function": {"name": fn.get("name"), "arguments": fn.get("arguments")}}
            message = {k: v for k, v in message.items() if k != "function_call"}
            message["tool_calls"] = [*(message.get("tool_calls") or ()), call]
        elif message.get("role") == "function":
            message = {"role": "tool", "tool_call_id": last_id, "content": message.get("content")}
        out.append(message)
    return out


def from_legacy(body: Mapping[str, Any]) -> dict[str, Any]:
    """The request with legacy `functions`/`function_call` (and legacy turns) in today's tools form."""
    out = dict(body)
    messages = body["messages"]
    if any(m.get("role") == "function" or m.get("function_call") is not None for m in messages):
        out["messages"] = _legacy_messages(messages)
    functions = body.get("functions")
    if functions is None:
        return out
    out["tools"] = [{"type": "function", "function": fn} for fn in functions]
    choice = _legacy_choice(body.get("function_call"))
    if out.get("tool_choice") is None and choice is not None:
        out["tool_choice"] = choice
    out["parallel_tool_calls"] = False  # a legacy answer holds one call
    return out


def _anthropic_tools(tools: Any) -> list[dict[str, Any]]:
    return [
        {
            "name": t["function"].get("name"),
            "description": t["function"].get("description", ""),
            "input_schema": t["function"].get("parameters") or {"type": "object", "properties": {}},
        }
        for t in tools or ()
        if isinstance(t, dict) and isinstance(t.get("function"), dict)
    ]


def _structured_tool(fmt: Any) -> dict[str, Any] | None:
    """The tool whose input is the answer `response_format` asks for (None: plain text)."""
    if not isinstance(fmt, dict) or fmt.get("type") in (None, "text"):
        return None
    if fmt["type"] == "json_object":
        return {"name": JSON_OBJECT_TOOL, "description": "Answer with a JSON object.",
                "input_schema": {"type": "object"}}
    if fmt["type"] != "json_schema":
        raise InvalidRequest(f"unknown response_format type '{fmt['type']}'", param="response_format.type")
    spec = fmt.get("json_schema") or {}
    name = spec.get("name") if isinstance(spec.get("name"), str) and spec.get("name") else JSON_OBJECT_TOOL
    schema = spec.get("schema") if isinstance(spec.get("schema"), dict) else {"type": "object"}
    description = spec.get("description") if isinstance(spec.get("description"), str) else None
    return {"name": name, "description": description or "Answer with a JSON object matching this schema.",
            "input_schema": schema}


def _tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    mapped: dict[str, Any] | None = None
    if choice == "auto":
        mapped = {"type": "auto"}
    elif choice == "required":
        mapped = {"type": "any"}
    elif choice == "none":
        return {"type": "none"}  # (Anthropic takes no other field with "none")
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        mapped = {"type": "tool", "name": choice["function"].get("name")}
    if parallel is False:
        mapped = {**(mapped or {"type": "auto"}), "disable_parallel_tool_use": True}
    return mapped


def tools_and_choice(
    body: Mapping[str, Any], legacy: bool
) -> tuple[list[dict[str, Any]], dict[str, Any] | None, AnswerShape]:
    """Anthropic `tools` and `tool_choice` for the request (structured output included), and how
    to read the answer back."""
    tools = _anthropic_tools(body.get("tools"))
    choice, parallel = body.get("tool_choice"), body.get("parallel_tool_calls")
    json_tool = _structured_tool(body.get("response_format"))
    forces_own = bool(tools) and (choice == "required" or isinstance(choice, dict))
    if json_tool is None or forces_own:
        return tools, _tool_choice(choice, parallel) if tools else None, AnswerShape(legacy=legacy)
    name = json_tool["name"]
    if any(t["name"] == name for t in tools):
        raise InvalidRequest(f"response_format '{name}' has the name of one of the tools", param="response_format")
    if tools and choice != "none":  # the model answers in JSON or calls a tool of the client's
        mapped = _tool_choice("required", parallel)
    else:
        mapped = {"type": "tool", "name": name}
    return [*tools, json_tool], mapped, AnswerShape(json_tool=name, legacy=legacy)


def thinking_budget(body: Mapping[str, Any], choice: Mapping[str, Any] | None) -> int | None:
    """The thinking budget `reasoning_effort` asks for; None without one or when a tool is forced."""
    effort = body.get("reasoning_effort")
    budget = THINKING_BUDGETS.get(effort) if isinstance(effort, str) else None
    if budget is None or (choice is not None and choice.get("type") in _FORCING):
        return None
    return budget


def thinking_max_tokens(model: ModelSpec, asked: int | None, budget: int) -> int:
    """`max_tokens` with thinking: the budget on top of the output asked for (Anthropic wants
    max_tokens > budget_tokens)."""
    limit = model.max_output_tokens
    if asked is None and limit is not None and limit > budget:
        return limit
    return budget + (asked or DEFAULT_MAX_TOKENS)


def with_thinking(model: ModelSpec, body: Mapping[str, Any], asked: int | None) -> int | None:
    """The most output an Anthropic request may write: with `reasoning_effort`, the thinking
    budget on top of what was asked (what a budget hold must cover); else what was asked."""
    effort = body.get("reasoning_effort")
    budget = THINKING_BUDGETS.get(effort) if isinstance(effort, str) else None
    return asked if budget is None else thinking_max_tokens(model, asked, budget)


def without_sampling(out: dict[str, Any]) -> None:
    """Drop the sampling settings Anthropic refuses with thinking."""
    out.pop("temperature", None)
    out.pop("top_k", None)
    if out.get("top_p") is not None and out["top_p"] < _TOP_P_WITH_THINKING:
        del out["top_p"]
