"""The exact response cache: which requests may be answered from it, and under which key.

The key is a SHA-256 over the tenant, the resolved model and every request field that can change
the answer. Each field the OpenAI API defines is classified here, either as part of the key or
as deliberately ignored (with why); a test fails when the SDK grows a field that is neither.
Unknown fields are part of the key, so an unclassified field can only cost a miss, never serve
a wrong answer.

Only deterministic requests are cached by default (`temperature: 0`, or a `seed`). A client can
say otherwise per request with `x-gateway-cache`: `no-store` (do not store this answer),
`no-cache` (do not answer from the cache; the fresh answer may be stored) or `force` (use the
cache even though the request is not deterministic).
"""

from __future__ import annotations

import hashlib
from types import MappingProxyType
from typing import Any, NamedTuple

import orjson

from gateway.errors import InvalidRequest

__all__ = ["IGNORED_FIELDS", "KEY_FIELDS", "CachePolicy", "cache_key", "cache_policy"]

KEY_FIELDS = frozenset({
    "messages", "tools", "tool_choice", "parallel_tool_calls", "functions", "function_call",
    "temperature", "top_p", "top_k", "n", "stop", "max_tokens", "max_completion_tokens", "seed",
    "presence_penalty", "frequency_penalty", "logit_bias", "logprobs", "top_logprobs",
    "response_format", "reasoning_effort", "verbosity", "modalities", "audio", "prediction",
    "web_search_options", "moderation",
})
IGNORED_FIELDS = MappingProxyType({
    "model": "replaced by the resolved model",
    "stream": "a hit is served as a stream or not, as asked",
    "stream_options": "only shapes the stream",
    "user": "end-user id for abuse tracking; the tenant is part of the key",
    "safety_identifier": "end-user id for abuse tracking",
    "metadata": "stored-completion tags",
    "store": "whether the provider stores the completion",
    "service_tier": "the provider's processing tier, not the answer",
    "prompt_cache_key": "a provider prompt-cache routing hint",
    "prompt_cache_options": "a provider prompt-cache setting",
    "prompt_cache_retention": "a provider prompt-cache setting",
})
_MODES = frozenset({"no-store", "no-cache", "force"})


class CachePolicy(NamedTuple):
    read: bool  # may be answered from the cache
    write: bool  # a fresh answer may be stored


_POLICIES = MappingProxyType({(read, write): CachePolicy(read, write) for read in (False, True)
                              for write in (False, True)})


def cache_policy(body: dict[str, Any], header: str | None, deterministic: bool = False) -> CachePolicy:
    """`deterministic`: the same request always gets the same answer (embeddings)."""
    mode = header.strip().lower() if header else ""
    if mode and mode not in _MODES:
        raise InvalidRequest(f"x-gateway-cache must be one of {', '.join(sorted(_MODES))}", param="x-gateway-cache")
    eligible = deterministic or body.get("temperature") == 0 or body.get("seed") is not None or mode == "force"
    return _POLICIES[eligible and mode != "no-cache", eligible and mode != "no-store"]


def cache_key(tenant: str, model: str, body: dict[str, Any]) -> str:
    material = {k: v for k, v in body.items() if k not in IGNORED_FIELDS}
    blob = orjson.dumps([tenant, model, material], option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    return hashlib.sha256(blob).hexdigest()
