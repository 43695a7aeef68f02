"""An embeddings request (OpenAI's `POST /v1/embeddings`), parsed once into a typed object."""

from __future__ import annotations

from typing import Any, NamedTuple

from gateway.cache.response_key import CachePolicy, cache_policy
from gateway.errors import InvalidRequest
from gateway.pipeline.request import decode_object

__all__ = ["MAX_INPUTS", "EmbeddingRequest", "parse_embedding_request"]

MAX_INPUTS = 2048  # OpenAI's bound on inputs per request


class EmbeddingRequest(NamedTuple):
    body: dict[str, Any]  # as sent (forwarded with the model id swapped)
    model: str
    texts: list[str]  # the inputs given as text
    token_ids: int  # the tokens of inputs given as token ids
    cache: CachePolicy  # deterministic: cacheable unless the client says otherwise
    size: int


def _fail(message: str) -> InvalidRequest:
    return InvalidRequest(message, param="input")


def _is_ids(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(t, int) and not isinstance(t, bool)
                                                          for t in value)


def _inputs(value: Any) -> tuple[list[str], int]:
    if isinstance(value, str):
        if not value:
            raise _fail("'input' must not be empty")
        return [value], 0
    if not isinstance(value, list) or not value:
        raise _fail("'input' is required: a string, an array of strings, or token ids")
    if len(value) > MAX_INPUTS:
        raise _fail(f"'input' may hold at most {MAX_INPUTS} items")
    if _is_ids(value):
        return [], len(value)
    texts, ids = [], 0
    for i, item in enumerate(value):
        if isinstance(item, str) and item:
            texts.append(item)
        elif _is_ids(item):
            ids += len(item)
        else:
            raise _fail(f"'input[{i}]' must be a non-empty string or an array of token ids")
    return texts, ids


def parse_embedding_request(raw: bytes, cache_header: str | None = None) -> EmbeddingRequest:
    body = decode_object(raw)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("'model' is required and must be a non-empty string", param="model")
    texts, ids = _inputs(body.get("input"))
    fmt = body.get("encoding_format")
    if fmt is not None and fmt not in ("float", "base64"):
        raise InvalidRequest("'encoding_format' must be 'float' or 'base64'", param="encoding_format")
    dimensions = body.get("dimensions")
    if dimensions is not None and (not isinstance(dimensions, int) or isinstance(dimensions, bool) or dimensions < 1):
        raise InvalidRequest("'dimensions' must be a positive integer", param="dimensions")
    return EmbeddingRequest(body, model, texts, ids, cache_policy(body, cache_header, deterministic=True), len(raw))
