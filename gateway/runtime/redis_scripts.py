"""Several Lua script calls in one Redis round trip (`ScriptBatch`): a non-transactional pipeline
of EVALSHA. A script the server does not know yet (a restarted Redis) is loaded and only the
calls that failed for that reason are sent again, so no call takes effect twice.

A `Batch` is what the stores queue their calls in and what sends them; without Redis there is
nothing to send (`NoBatch`), and each store's finisher does its in-memory work itself."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.runtime.redis_errors import redis_errors

__all__ = ["Batch", "Lua", "NoBatch", "ScriptBatch"]


@dataclass(frozen=True, slots=True)
class Lua:
    """A script as `ScriptBatch` needs it (what a client's `register_script` gives works too)."""

    script: str
    sha: str

    @classmethod
    def of(cls, script: str) -> Lua:
        return cls(script, hashlib.sha1(script.encode()).hexdigest())


class Batch(Protocol):
    def add(self, script: Any, keys: list[Any], args: list[Any]) -> int:
        """Queue one script call; its index in `run()`'s results."""
        ...

    async def run(self) -> list[Any]:
        """Send what was queued: one result per call, in order."""
        ...


class NoBatch:
    """The batch of in-memory stores: nothing is queued, so nothing is sent."""

    def add(self, script: Any, keys: list[Any], args: list[Any]) -> int:
        raise TypeError("a script call needs a Redis batch")

    async def run(self) -> list[Any]:
        return []


class ScriptBatch:
    def __init__(self, redis: Any) -> None:
        self._redis = redis
        self._calls: list[tuple[Any, list[Any], list[Any]]] = []

    def add(self, script: Any, keys: list[Any], args: list[Any]) -> int:
        """Queue one call; its index in `run()`'s results."""
        self._calls.append((script, keys, args))
        return len(self._calls) - 1

    async def run(self) -> list[Any]:
        """One result per call: the script's reply, or the exception that stands for it (an error
        reply, or Redis being unreachable)."""
        from redis.exceptions import NoScriptError

        results = await self._send(self._calls)
        missing = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
        if missing:
            try:
                for script in {id(self._calls[i][0]): self._calls[i][0] for i in missing}.values():
                    await self._redis.script_load(script.script)
            except redis_errors() as exc:
                return [exc if i in missing else r for i, r in enumerate(results)]
            again = await self._send([self._calls[i] for i in missing])
            for i, result in zip(missing, again, strict=True):
                results[i] = result
        return results

    async def _send(self, calls: list[tuple[Any, list[Any], list[Any]]]) -> list[Any]:
        pipe = self._redis.pipeline(transaction=False)
        for script, keys, args in calls:
            pipe.evalsha(script.sha, len(keys), *keys, *args)
        try:
            return list(await pipe.execute(raise_on_error=False))
        except redis_errors() as exc:
            return [exc] * len(calls)
