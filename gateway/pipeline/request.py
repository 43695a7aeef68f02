"""A chat completion request, parsed and validated once into the typed `ChatRequest` that every
later step reads. This is the validation boundary: a body of the wrong shape is refused here
with a 400 naming the field (`param`), so nothing after it meets a type it does not expect.

Only what the gateway relies on is checked. Fields that are not OpenAI chat parameters are
listed in `extras`: they reach an upstream only if its model's `extra_body_fields` allow them,
and credentials or endpoints (`api_key`, `api_base`, ...) never do.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import orjson

from gateway.cache.response_key import IGNORED_FIELDS, KEY_FIELDS, CachePolicy, cache_policy
from gateway.errors import InvalidRequest
from gateway.routing.outputs import request_shape

__all__ = [
    "CHAT_FIELDS", "MAX_OUTPUT_TOKENS", "ChatRequest", "Native", "chat_request", "decode_object", "needed_capabilities",
    "parse_chat_request",
]

# OpenAI's chat parameters (the response cache classifies each one: part of the key, or not).
CHAT_FIELDS = KEY_FIELDS | frozenset(IGNORED_FIELDS)
# No model writes more than this in one answer; a larger max_tokens is a mistake or an attack.
MAX_OUTPUT_TOKENS = 1 << 24
_NO_EXTRAS: frozenset[str] = frozenset()

_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
_ROLE_LIST = ", ".join(sorted(_ROLES))


class Native(NamedTuple):
    """The client's request in its own API (`messages` | `responses`), for a model that serves
    that API itself: sent as it is rather than translated."""

    api: str
    body: dict[str, Any]
    headers: dict[str, str]  # the client's headers that the provider reads (anthropic-beta, ...)


class ChatRequest(NamedTuple):
    """What the client asked for (immutable). `body` is the request as sent (unknown fields
    included), to be forwarded upstream; it is never changed (each attempt sends its own copy)."""

    body: dict[str, Any]
    model: str  # a model or a tier name
    messages: list[Any]
    max_output: int | None  # max_completion_tokens, else max_tokens
    n: int  # choices asked for
    stream: bool
    include_usage: bool  # stream_options.include_usage: the client wants the usage chunk
    tools: list[Any] | None
    response_format: dict[str, Any] | None
    needs: frozenset[str]  # capabilities a model must have: tools, vision, json_schema, audio
    cache: CachePolicy  # may the answer come from, or go to, the response cache
    size: int  # the body's bytes (a large one is counted off the event loop)
    extras: frozenset[str]  # top-level fields that are not chat parameters (usually none)
    shape: str  # short | general | long | structured: what its answer's length is expected from
    native: Native | None = None  # another API's request this one was translated from
    # The service tier it asks to be billed at: `priority` (dearer: budgets hold for it), `flex`
    # (asked for, or `defer`), else `default`; routing prices the candidates at it.
    service_tier: str = "default"
    defer: bool = False  # may wait (`x-gateway-defer: flex`): sent at the flex service tier where it can be


def _fail(message: str, param: str) -> InvalidRequest:
    return InvalidRequest(message, param=param)


def _positive_int(body: dict[str, Any], key: str, high: int) -> int | None:
    value = body.get(key)
    if value is not None and (value.__class__ is not int or not 1 <= value <= high):
        raise _fail(f"'{key}' must be an integer from 1 to {high}", key)
    return value


def _number(body: dict[str, Any], key: str, low: float, high: float) -> None:
    value = body.get(key)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise _fail(f"'{key}' must be a number between {low:g} and {high:g}", key)


def _string(value: Any, param: str) -> None:
    if value.__class__ is not str:
        raise _fail(f"'{param}' must be a string", param)


def _object(value: Any, param: str) -> dict[str, Any]:
    if value.__class__ is not dict:
        raise _fail(f"'{param}' must be an object", param)
    return value


def _part(part: Any, param: str) -> None:
    """One content part: an object with a string `type`; the gateway reads text and image parts."""
    kind = _object(part, param).get("type")
    if kind.__class__ is not str:
        raise _fail(f"'{param}.type' must be a string", f"{param}.type")
    if kind == "text":
        _string(part.get("text"), f"{param}.text")
    elif kind == "image_url":
        image = _object(part.get("image_url"), f"{param}.image_url")
        _string(image.get("url"), f"{param}.image_url.url")
        if image.get("detail") is not None:
            _string(image["detail"], f"{param}.image_url.detail")
    elif kind == "input_audio":
        _string(_object(part.get("input_audio"), f"{param}.input_audio").get("data"), f"{param}.input_audio.data")


def _tool_calls(calls: Any, param: str) -> None:
    if calls.__class__ is not list:
        raise _fail(f"'{param}' must be an array", param)
    for i, call in enumerate(calls):
        fn = _object(_object(call, f"{param}[{i}]").get("function"), f"{param}[{i}].function")
        _string(fn.get("name"), f"{param}[{i}].function.name")
        if fn.get("arguments") is not None:
            _string(fn["arguments"], f"{param}[{i}].function.arguments")


def _message(message: Any, param: str) -> None:
    _object(message, param)
    role = message.get("role")
    if role.__class__ is not str or role not in _ROLES:
        raise _fail(f"'{param}.role' must be one of {_ROLE_LIST}", f"{param}.role")
    content = message.get("content")
    if content.__class__ is list:
        for j, part in enumerate(content):
            _part(part, f"{param}.content[{j}]")
    elif content is None:
        if not (role == "assistant" and (message.get("tool_calls") or message.get("function_call"))):
            raise _fail(f"'{param}.content' is required", f"{param}.content")
    elif content.__class__ is not str:
        raise _fail(f"'{param}.content' must be a string or an array of content parts", f"{param}.content")
    if len(message) > 2:  # role and content alone are the common message
        for key in ("name", "tool_call_id", "refusal"):
            if message.get(key) is not None:
                _string(message[key], f"{param}.{key}")
        if message.get("tool_calls") is not None:
            _tool_calls(message["tool_calls"], f"{param}.tool_calls")
        if message.get("function_call") is not None:
            _string(_object(message["function_call"], f"{param}.function_call").get("name"),
                    f"{param}.function_call.name")


def _messages(messages: Any) -> list[Any]:
    if messages.__class__ is not list or not messages:
        raise _fail("'messages' must be a non-empty array", "messages")
    for i, message in enumerate(messages):
        if (message.__class__ is dict and len(message) == 2 and message.get("content").__class__ is str
                and message.get("role").__class__ is str and message["role"] in _ROLES):
            continue  # the common message: a role and its text
        _message(message, f"messages[{i}]")
    return messages


def _parameters(fn: dict[str, Any], param: str) -> None:
    """A function's JSON Schema parameters, as far as token counting reads them."""
    parameters = fn.get("parameters")
    if parameters is None:
        return
    properties = _object(parameters, f"{param}.parameters").get("properties")
    if properties is None:
        return
    for name, spec in _object(properties, f"{param}.parameters.properties").items():
        if spec.__class__ is dict and spec.get("enum") is not None and spec["enum"].__class__ is not list:
            raise _fail(f"'{param}.parameters.properties.{name}.enum' must be an array",
                        f"{param}.parameters.properties.{name}.enum")


def _tools(tools: Any) -> list[Any] | None:
    if tools is None:
        return None
    if tools.__class__ is not list:
        raise _fail("'tools' must be an array", "tools")
    for i, tool in enumerate(tools):
        fn = tool.get("function") if tool.__class__ is dict else None
        if fn.__class__ is not dict or fn.get("name").__class__ is not str or not fn["name"]:
            raise _fail(f"'tools[{i}].function.name' is required", f"tools[{i}].function.name")
        if fn.get("description") is not None:
            _string(fn["description"], f"tools[{i}].function.description")
        _parameters(fn, f"tools[{i}].function")
    return tools


def _functions(functions: Any) -> None:
    """The legacy `functions` list (before `tools`)."""
    if functions is None:
        return
    if functions.__class__ is not list:
        raise _fail("'functions' must be an array", "functions")
    for i, fn in enumerate(functions):
        if _object(fn, f"functions[{i}]").get("name").__class__ is not str:
            raise _fail(f"'functions[{i}].name' is required", f"functions[{i}].name")


def _response_format(body: dict[str, Any]) -> dict[str, Any] | None:
    if body.get("response_format") is None:
        return None
    fmt = _object(body["response_format"], "response_format")
    _string(fmt.get("type"), "response_format.type")
    if fmt["type"] == "json_schema":
        _object(fmt.get("json_schema"), "response_format.json_schema")
    return fmt


def _stream_options(body: dict[str, Any]) -> bool:
    """Whether the client wants the usage chunk of a stream."""
    options = body.get("stream_options")
    if options is None:
        return False
    include = _object(options, "stream_options").get("include_usage")
    if include is not None and include.__class__ is not bool:
        raise _fail("'stream_options.include_usage' must be a boolean", "stream_options.include_usage")
    return bool(include)


def _stop(body: dict[str, Any]) -> None:
    stop = body.get("stop")
    if stop is None or stop.__class__ is str:
        return
    if stop.__class__ is not list or not all(s.__class__ is str for s in stop):
        raise _fail("'stop' must be a string or an array of strings", "stop")


def needed_capabilities(messages: list[Any], tools: Any, functions: Any, fmt: Any,
                        audio_out: bool = False) -> frozenset[str]:
    """What a model must support to serve this request (of validated parts)."""
    needs = set()
    if tools or functions:
        needs.add("tools")
    if fmt is not None and fmt.get("type") == "json_schema":
        needs.add("json_schema")
    if audio_out:
        needs.add("audio")
    for message in messages:
        content = message.get("content")
        if content.__class__ is list:
            kinds = {p.get("type") for p in content}
            if "image_url" in kinds:
                needs.add("vision")
            if "input_audio" in kinds:
                needs.add("audio")
    return frozenset(needs)


def _audio_out(body: dict[str, Any]) -> bool:
    """Whether the client asks for spoken output (`modalities` with "audio", or `audio`)."""
    modalities = body.get("modalities")
    if modalities is not None and (modalities.__class__ is not list or not all(m.__class__ is str for m in modalities)):
        raise _fail("'modalities' must be an array of strings", "modalities")
    return bool(modalities and "audio" in modalities) or body.get("audio") is not None


def _special(body: dict[str, Any], messages: list[Any]) -> bool:
    """Whether the request may need a capability; False for the common request, cheaply."""
    if (body.get("tools") or body.get("functions") or body.get("response_format") is not None
            or body.get("modalities") is not None or body.get("audio") is not None):
        return True
    for message in messages:
        if message.get("content").__class__ is list:
            return True
    return False


_NOTHING_NEEDED: frozenset[str] = frozenset()


def decode_object(raw: bytes) -> dict[str, Any]:
    """A request body that must be one JSON object (400 otherwise)."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}") from None
    if body.__class__ is not dict:
        raise InvalidRequest("request body must be a JSON object")
    return body


def parse_chat_request(raw: bytes, cache_header: str | None = None, defer_header: str | None = None) -> ChatRequest:
    """The request in `raw` (a chat completion body) and the client's `x-gateway-cache` and
    `x-gateway-defer` headers."""
    return chat_request(decode_object(raw), len(raw), cache_header, defer_header=defer_header)


def _service_tier(body: dict[str, Any], defer_header: str | None) -> tuple[str, bool]:
    """(service tier, defer): the service tier asked for in the body (`priority`, `flex`, else
    `default`), and whether the request may wait (`x-gateway-defer`)."""
    tier = body.get("service_tier")
    if tier is not None and tier.__class__ is not str:
        raise _fail("'service_tier' must be a string", "service_tier")
    if defer_header is None:
        return (tier if tier in ("priority", "flex") else "default"), False
    if defer_header.strip().lower() != "flex":
        raise _fail("x-gateway-defer must be 'flex'", "x-gateway-defer")
    if tier is not None and tier not in ("auto", "default", "flex"):
        raise _fail(f"x-gateway-defer: flex cannot be combined with service_tier '{tier}'", "service_tier")
    return "flex", True


def chat_request(body: dict[str, Any], size: int, cache_header: str | None = None,
                 native: Native | None = None, defer_header: str | None = None) -> ChatRequest:
    """A decoded chat body (`size`: the bytes it came in): what another client API's request was
    translated into (`gateway/formats/`). `defer_header`: the client's `x-gateway-defer`."""
    model = body.get("model")
    if model.__class__ is not str or not model:
        raise _fail("'model' is required and must be a non-empty string", "model")
    messages = _messages(body.get("messages"))
    stream = body.get("stream")
    if stream is not None and stream.__class__ is not bool:
        raise _fail("'stream' must be a boolean", "stream")
    include_usage = _stream_options(body)
    max_tokens = _positive_int(body, "max_tokens", MAX_OUTPUT_TOKENS)
    max_completion = _positive_int(body, "max_completion_tokens", MAX_OUTPUT_TOKENS)
    n = _positive_int(body, "n", 128) or 1
    extras = _NO_EXTRAS
    if len(body) > 2:  # only model and messages: nothing more to check
        _number(body, "temperature", 0, 2)
        _number(body, "top_p", 0, 1)
        _stop(body)
        _functions(body.get("functions"))
        unknown = body.keys() - CHAT_FIELDS
        if unknown:
            extras = frozenset(unknown)
    tools = _tools(body.get("tools"))
    fmt = _response_format(body)
    needs = (needed_capabilities(messages, tools, body.get("functions"), fmt, _audio_out(body))
             if _special(body, messages) else _NOTHING_NEEDED)
    service_tier, defer = _service_tier(body, defer_header) if defer_header is not None or "service_tier" in body \
        else ("default", False)
    return ChatRequest(body, model, messages, max_completion or max_tokens, n, bool(stream), include_usage, tools,
                       fmt, needs, cache_policy(body, cache_header), size, extras,
                       request_shape(messages, needs, body), native, service_tier, defer)
