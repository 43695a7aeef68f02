"""Several Lua calls in one round trip; a script Redis does not know yet is loaded and only the
calls that failed for that reason are sent again (no call takes effect twice)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from gateway.runtime.redis_scripts import Riders, ScriptBatch


def test_unknown_scripts_are_loaded_and_only_their_calls_repeated(redis_url: str) -> None:
    async def run() -> None:
        client = aioredis.from_url(redis_url)
        counter = f"test-{uuid.uuid4().hex}:n"
        try:
            known = client.register_script("return redis.call('INCR', KEYS[1])")
            await client.script_load(known.script)
            unknown = client.register_script(f"-- {uuid.uuid4().hex}\nreturn redis.call('INCRBY', KEYS[1], ARGV[1])")
            batch = ScriptBatch(client)
            batch.add(known, [counter], [])
            batch.add(unknown, [counter], [10])
            assert await batch.run() == [1, 11]  # INCR ran once, INCRBY once after its script was loaded
            assert int(await client.get(counter)) == 11
            await client.delete(counter)
        finally:
            await client.aclose()

    asyncio.run(run())


def test_unreachable_redis_gives_the_error_as_every_result() -> None:
    async def run() -> None:
        client = aioredis.from_url("redis://127.0.0.1:9/0", socket_connect_timeout=0.2)
        batch = ScriptBatch(client)
        batch.add(client.register_script("return 1"), [], [])
        results = await batch.run()
        assert len(results) == 1 and isinstance(results[0], RedisError)
        await client.aclose()

    asyncio.run(run())


class _Counted:
    """A real client whose pipelines are counted (one pipeline sent = one round trip); while
    `hold` is set, a pipeline's execute waits for it (a round trip in flight); while `fault` is
    set, it raises that."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client
        self.sent = 0
        self.hold: asyncio.Event | None = None
        self.fault: Exception | None = None  # raised by a pipeline's execute

    def pipeline(self, transaction: bool = True) -> _CountedPipe:
        return _CountedPipe(self, self.client.pipeline(transaction=transaction))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


class _CountedPipe:
    def __init__(self, owner: _Counted, pipe: Any) -> None:
        self._owner = owner
        self._pipe = pipe

    def evalsha(self, *args: Any) -> None:
        self._pipe.evalsha(*args)

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        self._owner.sent += 1
        if self._owner.hold is not None:
            await self._owner.hold.wait()
        if self._owner.fault is not None:
            raise self._owner.fault
        return list(await self._pipe.execute(raise_on_error=raise_on_error))


# counts ARGV[1] into KEYS[2] once per mark KEYS[1] (as a settlement does): sending it again changes nothing
_ONCE = "if redis.call('SET', KEYS[1], '1', 'NX') then return redis.call('INCRBY', KEYS[2], ARGV[1]) end return -1"


def _with_scripts(redis_url: str, test: Callable[[_Counted, Any, str], Awaitable[None]]) -> None:
    """Run `test(counted client, the _ONCE script (loaded), a fresh key prefix)`; its keys go afterwards."""
    async def run() -> None:
        client = aioredis.from_url(redis_url)
        prefix = f"test-{uuid.uuid4().hex}"
        try:
            once = client.register_script(_ONCE)
            await client.script_load(once.script)
            await test(_Counted(client), once, prefix)
        finally:
            await client.delete(*[k async for k in client.scan_iter(f"{prefix}:*")] or [prefix])
            await client.aclose()

    asyncio.run(run())


async def _ride(riders: Riders, once: Any, k: str, amount: int) -> asyncio.Task[Any]:
    """A settlement-like call waiting in `riders` (queued once its task has run once)."""
    ride = asyncio.get_running_loop().create_task(riders.call(once, [f"{k}:mark", f"{k}:n"], [amount]))
    await asyncio.sleep(0)
    return ride


def test_a_waiting_call_rides_in_front_of_the_next_batch(redis_url: str) -> None:
    async def test(counted: _Counted, once: Any, k: str) -> None:
        read = counted.register_script("return redis.call('GET', KEYS[1])")
        await counted.script_load(read.script)
        riders = Riders(counted, wait_s=3600.0)  # never alone here: only the batch can carry it
        ride = await _ride(riders, once, k, 7)
        batch = ScriptBatch(counted, riders)
        batch.add(read, [f"{k}:n"], [])
        assert await batch.run() == [b"7"]  # the rider ran first, in the same round trip
        assert await ride == 7
        assert counted.sent == 1
        assert await ScriptBatch(counted, riders).run() == [] and counted.sent == 1  # nothing rides twice
        assert int(await counted.get(f"{k}:n")) == 7

    _with_scripts(redis_url, test)


def test_a_waiting_call_goes_alone_when_no_batch_comes(redis_url: str) -> None:
    async def test(counted: _Counted, once: Any, k: str) -> None:
        riders = Riders(counted, wait_s=0.01)
        replies = await asyncio.wait_for(asyncio.gather(
            riders.call(once, [f"{k}:a", f"{k}:n"], [2]), riders.call(once, [f"{k}:b", f"{k}:n"], [3])), 10)
        assert list(replies) == [2, 5] and counted.sent == 1  # both in one round trip, in order

    _with_scripts(redis_url, test)


def test_a_batch_cancelled_in_flight_leaves_its_riders_to_go_again_once(redis_url: str) -> None:
    async def test(counted: _Counted, once: Any, k: str) -> None:
        riders = Riders(counted, wait_s=0.01)
        ride = await _ride(riders, once, k, 4)
        counted.hold = asyncio.Event()  # the reservation's round trip never completes
        batch = asyncio.get_running_loop().create_task(ScriptBatch(counted, riders).run())
        while counted.sent < 1:
            await asyncio.sleep(0)
        batch.cancel()
        counted.hold = None
        assert await asyncio.wait_for(ride, 10) == 4  # sent again, by itself
        assert counted.sent == 2 and int(await counted.get(f"{k}:n")) == 4

    _with_scripts(redis_url, test)


def test_a_batch_that_fails_otherwise_fails_its_riders_once(redis_url: str) -> None:
    async def test(counted: _Counted, once: Any, k: str) -> None:
        riders = Riders(counted, wait_s=3600.0)
        ride = await _ride(riders, once, k, 4)
        counted.fault = TypeError("not a Redis error")
        with pytest.raises(TypeError):
            await ScriptBatch(counted, riders).run()
        with pytest.raises(TypeError):
            await ride  # the rider's failure too, not a call left waiting forever
        assert riders.take() == []

    _with_scripts(redis_url, test)


def test_a_rider_gets_the_error_when_redis_is_unreachable() -> None:
    async def run() -> None:
        client = aioredis.from_url("redis://127.0.0.1:9/0", socket_connect_timeout=0.2)
        riders = Riders(client, wait_s=0.0)
        with pytest.raises(RedisError):
            await asyncio.wait_for(riders.call(client.register_script("return 1"), [], []), 10)
        await client.aclose()

    asyncio.run(run())
