"""Responses the gateway keeps for the Responses API (`previous_response_id`, `GET` and `DELETE
/v1/responses/{id}`) when it produced them itself, for every model not served by OpenAI natively.

An entry is the Response object, the conversation so far in chat form (what a continuation
replays) and the gateway model that produced it (where a continuation goes). Every entry belongs
to one tenant (the caller's team, else key, else bearer token: `Caller.tenant`): another tenant
asking for its id gets "not found", exactly as for an id that never existed.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from gateway.errors import ServiceUnavailable

__all__ = ["MemoryResponseStore", "RedisResponseStore", "ResponseStore", "StoredResponse"]


@dataclass(frozen=True, slots=True)
class StoredResponse:
    response: dict[str, Any]  # the Response object as the client got it
    messages: list[dict[str, Any]]  # the conversation in chat form, this response's output included
    model: str  # the gateway model that produced it
    native: bool = False  # OpenAI produced it itself (and keeps it: a continuation goes there as it is)

    def encode(self) -> bytes:
        return orjson.dumps({"response": self.response, "messages": self.messages, "model": self.model,
                             "native": self.native})

    @classmethod
    def decode(cls, raw: bytes) -> StoredResponse:
        data = orjson.loads(raw)
        return cls(data["response"], data["messages"], data["model"], bool(data.get("native")))


class ResponseStore(Protocol):
    async def put(self, tenant: str, entry: StoredResponse) -> None: ...

    async def get(self, tenant: str, response_id: str) -> StoredResponse | None: ...

    async def delete(self, tenant: str, response_id: str) -> bool: ...


class MemoryResponseStore:
    """This process's memory: at most `max_entries` (the oldest go first), each for `ttl_s`."""

    def __init__(self, ttl_s: float, max_entries: int) -> None:
        self._ttl = ttl_s
        self._max = max_entries
        self._entries: OrderedDict[tuple[str, str], tuple[float, bytes]] = OrderedDict()

    async def put(self, tenant: str, entry: StoredResponse) -> None:
        key = (tenant, str(entry.response["id"]))
        self._entries[key] = (time.monotonic() + self._ttl, entry.encode())
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    async def get(self, tenant: str, response_id: str) -> StoredResponse | None:
        found = self._entries.get((tenant, response_id))
        if found is None:
            return None
        if found[0] < time.monotonic():
            del self._entries[(tenant, response_id)]
            return None
        return StoredResponse.decode(found[1])

    async def delete(self, tenant: str, response_id: str) -> bool:
        return self._entries.pop((tenant, response_id), None) is not None


class RedisResponseStore:
    """Shared by every replica: one key per response, expiring after `ttl_s`."""

    def __init__(self, redis: Any, prefix: str, ttl_s: int) -> None:
        self._redis = redis
        self._prefix = prefix
        self._ttl = ttl_s

    def _key(self, tenant: str, response_id: str) -> str:
        owner = hashlib.sha256(tenant.encode()).hexdigest()[:32]  # (a bearer tenant holds a hash already)
        return f"{self._prefix}:response:{owner}:{response_id}"

    async def put(self, tenant: str, entry: StoredResponse) -> None:
        await self._call(self._redis.set(self._key(tenant, str(entry.response["id"])), entry.encode(), ex=self._ttl))

    async def get(self, tenant: str, response_id: str) -> StoredResponse | None:
        raw = await self._call(self._redis.get(self._key(tenant, response_id)))
        return None if raw is None else StoredResponse.decode(raw)

    async def delete(self, tenant: str, response_id: str) -> bool:
        return bool(await self._call(self._redis.delete(self._key(tenant, response_id))))

    @staticmethod
    async def _call(command: Any) -> Any:
        from redis.exceptions import RedisError

        try:
            return await command
        except (RedisError, OSError) as exc:
            raise ServiceUnavailable(f"the response store (Redis) is unavailable: {exc}") from None
