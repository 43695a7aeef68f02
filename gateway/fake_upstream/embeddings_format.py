"""OpenAI Embeddings wire format (``POST /v1/embeddings``) for the fake upstream.

Each input gets a unit-length vector drawn from the sha256 of its text (token-id inputs: of their
ids), so the same input always gets the same vector and a shorter ``dimensions`` is a prefix of a
longer one, rescaled. Values are float32, as OpenAI's are, so ``encoding_format: "base64"`` (the
little-endian float32 bytes) decodes to exactly the floats the ``"float"`` answer holds.
"""

from __future__ import annotations

import base64
import hashlib
import math
import struct
from typing import Any

import orjson
from aiohttp import web

from gateway.fake_upstream.behaviour import Turn
from gateway.fake_upstream.faults import run_faults
from gateway.fake_upstream.openai_format import error_response, fault_response

__all__ = [
    "DEFAULT_DIMENSIONS",
    "MAX_DIMENSIONS",
    "PATH",
    "check_request",
    "count_tokens",
    "inputs",
    "respond",
    "vector",
]

PATH = "/v1/embeddings"
DEFAULT_DIMENSIONS = 8
MAX_DIMENSIONS = 16_384
_JSON = "application/json"
_BAD_INPUT = "'input' must be a non-empty string, array of strings, array of token ids or array of such arrays."


def _is_ids(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(type(t) is int and t >= 0 for t in value)


def inputs(body: dict[str, Any]) -> list[str | list[int]] | None:
    """The request's inputs, one per vector, or None when ``input`` has none of the accepted shapes."""
    raw = body.get("input")
    if isinstance(raw, str):
        return [raw] if raw else None
    if not isinstance(raw, list) or not raw:
        return None
    if _is_ids(raw):
        return [raw]
    if all(isinstance(x, str) and x for x in raw) or all(_is_ids(x) for x in raw):
        return list(raw)
    return None


def check_request(headers: dict[str, str], body: Any) -> web.Response | None:
    """Auth/shape validation; returns an error response or None when the request is acceptable."""
    auth = headers.get("authorization", "")
    if not auth.startswith("Bearer ") or not auth[7:].strip():
        return error_response(401, "invalid_request_error", "You didn't provide an API key (Authorization: Bearer).")
    if not isinstance(body, dict) or not isinstance(body.get("model"), str):
        return error_response(400, "invalid_request_error", "'model' is a required string property.")
    if inputs(body) is None:
        return error_response(400, "invalid_request_error", _BAD_INPUT)
    if body.get("encoding_format", "float") not in ("float", "base64"):
        return error_response(400, "invalid_request_error", "'encoding_format' must be 'float' or 'base64'.")
    dims = body.get("dimensions")
    if dims is not None and (type(dims) is not int or not 1 <= dims <= MAX_DIMENSIONS):
        return error_response(400, "invalid_request_error", f"'dimensions' must be an integer in 1..{MAX_DIMENSIONS}.")
    return None


def _seed(item: str | list[int]) -> bytes:
    text = item if isinstance(item, str) else "tokens:" + ",".join(map(str, item))
    return hashlib.sha256(text.encode()).digest()


def vector(item: str | list[int], dimensions: int = DEFAULT_DIMENSIONS) -> tuple[float, ...]:
    """The deterministic unit-length float32 embedding of one input."""
    seed = _seed(item)
    raw: list[float] = []
    block = 0
    while len(raw) < dimensions:
        digest = hashlib.sha256(seed + block.to_bytes(4, "little")).digest()
        raw += [n / 2**31 - 1.0 for n in struct.unpack("<8I", digest)]  # uniform in [-1, 1)
        block += 1
    raw = raw[:dimensions]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return struct.unpack(f"<{dimensions}f", struct.pack(f"<{dimensions}f", *(x / norm for x in raw)))


def count_tokens(body: dict[str, Any]) -> int:
    """Prompt tokens, estimated the way the chat format does (words of text); token-id inputs count their ids."""
    return sum(len(x.split()) if isinstance(x, str) else len(x) for x in inputs(body) or ())


def _body(turn: Turn) -> bytes:
    body = turn.body
    dims = body.get("dimensions") or DEFAULT_DIMENSIONS
    as_base64 = body.get("encoding_format") == "base64"
    data = []
    for i, item in enumerate(inputs(body) or ()):
        vec = vector(item, dims)
        emb: Any = base64.b64encode(struct.pack(f"<{dims}f", *vec)).decode() if as_base64 else vec
        data.append({"object": "embedding", "index": i, "embedding": emb})
    out: dict[str, Any] = {"object": "list", "data": data, "model": turn.model}
    b = turn.behaviour
    if not b.omit_usage:
        n = count_tokens(body)
        out["usage"] = b.usage if b.usage is not None else {"prompt_tokens": n, "total_tokens": n}
    return orjson.dumps(out)


async def _plain(request: web.Request, turn: Turn) -> web.StreamResponse | None:
    """Embeddings never stream: a request that sets ``stream`` gets the ordinary answer, its faults included."""
    if turn.fault == "drop":
        if request.transport is not None:
            request.transport.close()
        return None
    if turn.fault == "malformed":
        return web.Response(body=b'{"not json', content_type=_JSON)
    return web.Response(body=_body(turn), content_type=_JSON)


async def respond(request: web.Request, turn: Turn) -> web.StreamResponse | None:
    """Answer one embeddings request; None means the connection was deliberately dropped."""
    handled, answer = await run_faults(request, turn, fault_response, _plain)
    if handled:
        return answer
    return web.Response(body=_body(turn), content_type=_JSON)
