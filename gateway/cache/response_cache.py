"""The response cache as the pipeline uses it: whether a request may use it, its key, looking an
answer up and storing one (in the background, off the response's path). Only complete,
successful answers are stored. If the store is unreachable, requests are served uncached
(`bypass`) and counted in `gateway_cache_errors_total{cache="response"}`.

A disabled cache is `DisabledResponseCache`: every request bypasses it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from gateway.cache.response_key import CachePolicy, cache_key
from gateway.cache.response_store import CacheStore, CacheUnavailable
from gateway.config.schema import CacheLayer
from gateway.money.pricing import Cost
from gateway.observability.metrics import Metrics
from gateway.runtime.background import Background

__all__ = ["CachedAnswer", "DisabledResponseCache", "ResponseCache", "StoredResponseCache", "assemble"]

log = logging.getLogger("gateway.cache")


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    body: dict[str, Any]  # the chat.completion as first answered
    cost_pico: int  # what it cost then: what this hit saves


class ResponseCache(Protocol):
    def used_for(self, policy: CachePolicy) -> bool:
        """May a request with this policy read or write the cache at all?"""
        ...

    def key(self, tenant: str, model: str, body: dict[str, Any]) -> str: ...

    async def lookup(self, key: str) -> tuple[CachedAnswer | None, str]:
        """The answer stored under `key` (or None) and the x-gateway-cache result: hit, miss, or
        bypass when the store is unreachable."""
        ...

    def store(self, key: str | None, body: dict[str, Any], cost: Cost) -> None:
        """Store a complete answer, in the background."""
        ...

    async def run(self) -> None:
        """Background upkeep for as long as the app runs (returns at once if there is none)."""
        ...

    async def close(self) -> None:
        """At shutdown, after the background writes: the store's own Redis client, if any."""
        ...


class DisabledResponseCache:
    def used_for(self, policy: CachePolicy) -> bool:
        return False

    def key(self, tenant: str, model: str, body: dict[str, Any]) -> str:
        raise AssertionError("the response cache is disabled")

    async def lookup(self, key: str) -> tuple[CachedAnswer | None, str]:
        return None, "bypass"

    def store(self, key: str | None, body: dict[str, Any], cost: Cost) -> None:
        return None

    async def run(self) -> None:
        return None

    async def close(self) -> None:
        return None


class StoredResponseCache:
    def __init__(self, store: CacheStore, config: CacheLayer, metrics: Metrics, background: Background) -> None:
        self._store = store
        self._config = config
        self._metrics = metrics
        self._background = background

    def used_for(self, policy: CachePolicy) -> bool:
        return policy.read or policy.write

    def key(self, tenant: str, model: str, body: dict[str, Any]) -> str:
        return cache_key(tenant, model, body)

    async def lookup(self, key: str) -> tuple[CachedAnswer | None, str]:
        metrics = self._metrics
        try:
            raw = await self._store.get(key)
        except CacheUnavailable as exc:
            metrics.child(metrics.cache_errors, "response").inc()
            log.warning("response cache unavailable, bypassed: %s", exc)
            return None, "bypass"
        result = "hit" if raw is not None else "miss"
        metrics.child(metrics.cache_requests, "response", result).inc()
        if raw is None:
            return None, result
        entry = orjson.loads(raw)
        return CachedAnswer(entry["body"], entry["cost_pico"]), result

    def store(self, key: str | None, body: dict[str, Any], cost: Cost) -> None:
        if key is None:
            return
        value = orjson.dumps({"body": body, "cost_pico": cost.total})
        if len(value) <= self._config.max_entry_bytes:
            self._background.spawn(self._write(key, value))

    async def _write(self, key: str, value: bytes) -> None:
        try:
            await self._store.set(key, value, self._config.ttl_s)
        except CacheUnavailable as exc:
            metrics = self._metrics
            metrics.child(metrics.cache_errors, "response").inc()
            log.warning("response cache unavailable, answer not stored: %s", exc)

    async def run(self) -> None:
        await self._store.run()

    async def close(self) -> None:
        await self._store.close()


def assemble(pieces: list[bytes]) -> dict[str, Any] | None:
    """Rebuild a chat.completion from relayed SSE chunks (to store a streamed answer); None if
    they do not parse."""
    choices: dict[int, dict[str, Any]] = {}
    head: dict[str, Any] = {}
    for event in b"".join(pieces).split(b"\n\n"):
        if not event.startswith(b"data: {"):
            continue
        chunk = orjson.loads(event[6:])
        head = head or {k: chunk.get(k) for k in ("id", "created", "model", "system_fingerprint")}
        for c in chunk.get("choices") or ():
            slot = choices.setdefault(c.get("index", 0), {"content": [], "calls": {}, "finish": None})
            delta = c.get("delta") or {}
            if isinstance(delta.get("content"), str):
                slot["content"].append(delta["content"])
            for call in delta.get("tool_calls") or ():
                entry = slot["calls"].setdefault(call.get("index", 0), {"id": None, "type": "function",
                                                                        "function": {"name": "", "arguments": ""}})
                entry["id"] = call.get("id") or entry["id"]
                fn = call.get("function") or {}
                entry["function"]["name"] += fn.get("name") or ""
                entry["function"]["arguments"] += fn.get("arguments") or ""
            slot["finish"] = c.get("finish_reason") or slot["finish"]
    if not choices:
        return None
    out = []
    for index, slot in sorted(choices.items()):
        message: dict[str, Any] = {"role": "assistant", "content": "".join(slot["content"]) or None}
        if slot["calls"]:
            message["tool_calls"] = [slot["calls"][i] for i in sorted(slot["calls"])]
        out.append({"index": index, "message": message, "finish_reason": slot["finish"], "logprobs": None})
    return {**head, "object": "chat.completion", "choices": out}
