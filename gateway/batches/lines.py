"""The batch input file: JSONL, one request a line, each

    {"custom_id": "...", "method": "POST", "url": "/v1/chat/completions", "body": {chat request}}

checked line by line when the file is uploaded and again when a batch is made of it: a line
that is not such an object, a duplicate custom_id, a body the chat API would refuse (parsed by
the same `chat_request` as a chat request), a streaming request, or lines naming different
models are a 400 whose message starts with the line's number ("line 3: ..."). Every line must
name the same model or tier (as OpenAI requires of one batch).

`upstream_file` writes the lines of one upstream batch: each body with the upstream's model id,
the fields its model does not take removed, and its output bounded where the hold assumed so.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

import orjson

from gateway.config.settings import ModelSpec
from gateway.errors import GatewayError, InvalidRequest
from gateway.pipeline.request import ChatRequest, chat_request

__all__ = ["CHAT_URL", "Line", "Routed", "parse_lines", "upstream_file"]

CHAT_URL = "/v1/chat/completions"
MAX_CUSTOM_ID = 512


class Line(NamedTuple):
    number: int  # 1-based, as an editor shows it
    custom_id: str
    request: ChatRequest


class Routed(NamedTuple):
    """A line and the model that takes it."""

    line: Line
    spec: ModelSpec
    input_tokens: int  # the prompt, counted in the model's encoding
    bound: int | None  # the max output tokens to send (the hold's), when the request set none


def _at(number: int, message: str, param: str | None = None) -> InvalidRequest:
    return InvalidRequest(f"line {number} of the input file: {message}", param=param)


def _line(number: int, raw: bytes, max_n: int) -> Line:
    try:
        item = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _at(number, f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(item, dict):
        raise _at(number, "must be a JSON object with custom_id, method, url and body")
    custom_id = item.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id or len(custom_id) > MAX_CUSTOM_ID:
        raise _at(number, f"'custom_id' must be a non-empty string of at most {MAX_CUSTOM_ID} characters",
                  "custom_id")
    if item.get("method") != "POST":
        raise _at(number, "'method' must be \"POST\"", "method")
    if item.get("url") != CHAT_URL:
        raise _at(number, f"'url' must be \"{CHAT_URL}\" (the batch endpoint the gateway serves)", "url")
    body = item.get("body")
    if not isinstance(body, dict):
        raise _at(number, "'body' must be a JSON object (a chat completion request)", "body")
    try:
        request = chat_request(body, len(raw))
    except GatewayError as exc:
        raise _at(number, exc.message, f"body.{exc.param}" if exc.param else "body") from None
    if request.stream:
        raise _at(number, "a batch request cannot stream ('stream': true)", "body.stream")
    if request.n > max_n:
        raise _at(number, f"'n' must be at most {max_n}", "body.n")
    return Line(number, custom_id, request)


def parse_lines(content: bytes, max_lines: int, max_n: int) -> list[Line]:
    """The file's requests, in order (blank lines skipped); a 400 naming the first bad line."""
    lines: list[Line] = []
    seen: set[str] = set()
    for number, raw in enumerate(content.split(b"\n"), 1):
        if not raw.strip():
            continue
        if len(lines) == max_lines:
            raise _at(number, f"a batch holds at most {max_lines} requests")
        line = _line(number, raw, max_n)
        if line.custom_id in seen:
            raise _at(number, f"custom_id '{line.custom_id}' is used by an earlier line; each must be unique",
                      "custom_id")
        if lines and line.request.model != lines[0].request.model:
            raise _at(number, f"model '{line.request.model}' differs from line {lines[0].number}'s "
                      f"'{lines[0].request.model}': one batch holds requests for one model or tier", "body.model")
        seen.add(line.custom_id)
        lines.append(line)
    if not lines:
        raise InvalidRequest("the input file holds no requests", param="input_file_id")
    return lines


def _upstream_body(routed: Routed) -> dict[str, Any]:
    request, spec = routed.line.request, routed.spec
    body = {**request.body, "model": spec.upstream_model}
    for name in request.extras - spec.extra_body_fields if request.extras else ():
        del body[name]  # not a chat parameter, and this upstream does not take it
    if routed.bound is not None:  # what the budget holds is all it may write (as chat requests)
        body["max_completion_tokens" if spec.reasoning else "max_tokens"] = routed.bound
    return body


def upstream_file(lines: Iterable[Routed]) -> bytes:
    """The JSONL of one upstream batch."""
    return b"".join(orjson.dumps({"custom_id": r.line.custom_id, "method": "POST", "url": CHAT_URL,
                                  "body": _upstream_body(r)}) + b"\n" for r in lines)
