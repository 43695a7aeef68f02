"""Several Lua script calls in one Redis round trip (`ScriptBatch`): a non-transactional pipeline
of EVALSHA. A script the server does not know yet (a restarted Redis) is loaded and only the
calls that failed for that reason are sent again, so no call takes effect twice.

A `Batch` is what the stores queue their calls in and what sends them; without Redis there is
nothing to send (`NoBatch`), and each store's finisher does its in-memory work itself.

Calls that need not go at once (a settlement, written after its answer was sent) can ride
(`Riders`): each waits for the next batch sent with the same `Riders` (the next reservation's
round trip) and goes at its front, or after a short wait in one batch with the others waiting.
Under load they add no round trip of their own."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.runtime.background import Background
from gateway.runtime.redis_errors import redis_errors

__all__ = ["Batch", "Lua", "NoBatch", "Riders", "ScriptBatch"]

_Call = tuple[Any, list[Any], list[Any]]  # script, keys, args


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


@dataclass(frozen=True, slots=True)
class _Ride:
    call: _Call
    reply: asyncio.Future[Any]


class Riders:
    """Script calls waiting to ride with the next `ScriptBatch` built with this object, or to go
    by themselves `wait_s` after the first of them arrived. A call whose batch was cancelled
    mid-flight waits again and is sent again, so its script must be idempotent (the settlements'
    are: each sets its mark once); any other failure of the batch is the call's too."""

    def __init__(self, redis: Any, wait_s: float = 0.01) -> None:
        self._redis = redis
        self._wait = wait_s
        self._waiting: list[_Ride] = []
        self._timer: asyncio.TimerHandle | None = None
        self._alone = Background()  # batches sent by the timer, referenced until done

    async def call(self, script: Any, keys: list[Any], args: list[Any]) -> Any:
        """The script's reply once a batch carried it; raises what a direct call would (an error
        reply, Redis unreachable)."""
        ride = _Ride((script, keys, args), asyncio.get_running_loop().create_future())
        self.wait([ride])
        reply = await ride.reply
        if isinstance(reply, BaseException):
            raise reply
        return reply

    def wait(self, rides: list[_Ride]) -> None:
        self._waiting += rides
        if self._timer is None and self._waiting:
            self._timer = asyncio.get_running_loop().call_later(self._wait, self._send_alone)

    def take(self) -> list[_Ride]:
        """Every call still waiting (a batch is about to carry them)."""
        rides, self._waiting = self._waiting, []
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        return [r for r in rides if not r.reply.done()]

    def _send_alone(self) -> None:
        self._timer = None
        self._alone.spawn(self._go_alone())

    async def _go_alone(self) -> None:
        await ScriptBatch(self._redis, self).run()


class ScriptBatch:
    def __init__(self, redis: Any, riders: Riders | None = None) -> None:
        self._redis = redis
        self._riders = riders
        self._calls: list[_Call] = []

    def add(self, script: Any, keys: list[Any], args: list[Any]) -> int:
        """Queue one call; its index in `run()`'s results."""
        self._calls.append((script, keys, args))
        return len(self._calls) - 1

    async def run(self) -> list[Any]:
        """One result per call: the script's reply, or the exception that stands for it (an error
        reply, or Redis being unreachable). The riders waiting go first, in the same round trip."""
        rides = self._riders.take() if self._riders is not None else []
        try:
            results = await self._run([*(ride.call for ride in rides), *self._calls])
        except asyncio.CancelledError:
            if self._riders is not None:  # not known to have run: they wait for the next batch
                self._riders.wait(rides)
            raise
        except Exception as exc:  # not Redis (its errors are results): each rider gets it too
            for ride in rides:
                if not ride.reply.done():
                    ride.reply.set_result(exc)
            raise
        for ride, result in zip(rides, results, strict=False):
            if not ride.reply.done():
                ride.reply.set_result(result)
        return results[len(rides):]

    async def _run(self, calls: list[_Call]) -> list[Any]:
        from redis.exceptions import NoScriptError

        if not calls:
            return []
        results = await self._send(calls)
        missing = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
        if missing:
            try:
                for script in {id(calls[i][0]): calls[i][0] for i in missing}.values():
                    await self._redis.script_load(script.script)
            except redis_errors() as exc:
                return [exc if i in missing else r for i, r in enumerate(results)]
            again = await self._send([calls[i] for i in missing])
            for i, result in zip(missing, again, strict=True):
                results[i] = result
        return results

    async def _send(self, calls: list[_Call]) -> list[Any]:
        pipe = self._redis.pipeline(transaction=False)
        for script, keys, args in calls:
            pipe.evalsha(script.sha, len(keys), *keys, *args)
        try:
            return list(await pipe.execute(raise_on_error=False))
        except redis_errors() as exc:
            return [exc] * len(calls)
