"""Several Lua calls in one round trip; a script Redis does not know yet is loaded and only the
calls that failed for that reason are sent again (no call takes effect twice)."""

from __future__ import annotations

import asyncio
import uuid

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from gateway.runtime.redis_scripts import ScriptBatch


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
