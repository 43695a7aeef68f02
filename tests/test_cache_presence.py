"""The response cache's local knowledge of what Redis holds (gateway/cache_presence.py): a miss
costs no Redis command, entries stored by another replica become known through the channel,
entries that existed before start-up through SCAN, and losing Redis falls back to reading it."""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from conftest import Gateway, free_port, start_redis_server
from redis.asyncio import Redis
from test_response_cache import ask, cache_config

from gateway.cache.response_presence import StoredKeys
from gateway.cache.response_store import CacheUnavailable, RedisCacheStore
from gateway.fake_upstream import FakeUpstreamThread


async def until(check: Callable[[], bool | Awaitable[bool]], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while True:
        done = check()
        if not isinstance(done, bool):
            done = await done
        if done:
            return
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.02)


@pytest.fixture
def private_redis() -> Iterator[tuple[int, list[subprocess.Popen[bytes]]]]:
    port = free_port()
    procs = [start_redis_server(port)]
    yield port, procs
    for proc in procs:
        proc.kill()
        proc.wait(5)


def test_misses_skip_redis_and_stores_by_others_become_known(redis_url: str) -> None:
    async def main() -> None:
        prefix = f"test-{uuid.uuid4().hex[:8]}"
        client_a, client_b = Redis.from_url(redis_url), Redis.from_url(redis_url)
        a = RedisCacheStore(client_a, prefix, ttl_s=60)
        b = RedisCacheStore(client_b, prefix, ttl_s=60)  # another replica
        await a.set("before", b"old answer", 60)  # exists before B starts
        assert b.presence.may_exist("anything")  # not synced yet: B must ask Redis
        follower = asyncio.get_running_loop().create_task(b.run())
        await until(lambda: b.presence.synced, "B never synced")
        assert b.presence.may_exist("before") and await b.get("before") == b"old answer"  # found by SCAN
        assert not b.presence.may_exist("never-stored") and await b.get("never-stored") is None
        await a.set("fresh", b"new answer", 0.5)
        await until(lambda: b.presence.may_exist("fresh"), "B never heard of A's store")
        assert await b.get("fresh") == b"new answer"
        await asyncio.sleep(0.55)
        assert not b.presence.may_exist("fresh")  # expired with its TTL
        follower.cancel()
        for client in (client_a, client_b):
            await client.aclose()

    asyncio.run(main())


def test_too_many_entries_fall_back_to_reading_redis(redis_url: str) -> None:
    async def main() -> None:
        client = Redis.from_url(redis_url)
        store = RedisCacheStore(client, f"test-{uuid.uuid4().hex[:8]}", ttl_s=60, max_known_keys=2)
        follower = asyncio.get_running_loop().create_task(store.run())
        await until(lambda: store.presence.synced, "never synced")
        await store.set("k1", b"1", 60)
        await store.set("k2", b"2", 60)
        assert store.presence.synced and not store.presence.may_exist("k3")
        await store.set("k3", b"3", 60)  # over max_known_keys: no longer sure what is missing
        assert not store.presence.synced and store.presence.may_exist("k4")
        assert await store.get("k3") == b"3" and await store.get("k4") is None
        follower.cancel()
        await client.aclose()

    asyncio.run(main())


def test_a_full_index_rescans_until_there_is_room(redis_url: str) -> None:
    async def main() -> None:
        client, prefix = Redis.from_url(redis_url), f"test-{uuid.uuid4().hex[:8]}"
        store = RedisCacheStore(client, prefix, ttl_s=60)
        store.presence = StoredKeys(client, store.key_prefix, 60, max_keys=2, rescan_when_full_s=0.2)
        follower = asyncio.get_running_loop().create_task(store.run())
        await until(lambda: store.presence.synced, "never synced")
        for key in ("k1", "k2", "k3"):
            await store.set(key, key.encode(), 60)
        assert not store.presence.synced  # full: reads ask Redis
        await client.delete(store.key_prefix + "k1", store.key_prefix + "k2")
        await until(lambda: store.presence.synced, "a rescan never found room")  # only k3 is left
        assert store.presence.may_exist("k3") and not store.presence.may_exist("k1")
        follower.cancel()
        await client.aclose()

    asyncio.run(main())


def test_redis_lost_and_back(private_redis: tuple[int, list[subprocess.Popen[bytes]]]) -> None:
    port, procs = private_redis

    async def main() -> None:
        client = Redis.from_url(f"redis://127.0.0.1:{port}/0", socket_timeout=2, socket_connect_timeout=2)
        store = RedisCacheStore(client, "gw", ttl_s=60)
        follower = asyncio.get_running_loop().create_task(store.run())
        await until(lambda: store.presence.synced, "never synced")
        procs[0].kill()
        procs[0].wait(5)
        await until(lambda: not store.presence.synced, "never noticed Redis went away")
        assert store.presence.may_exist("k")  # so a lookup asks Redis, and says it is unavailable
        with pytest.raises(CacheUnavailable):
            await store.get("k")
        procs.append(start_redis_server(port))
        await until(lambda: store.presence.synced, "never synced again")
        other_client = Redis.from_url(f"redis://127.0.0.1:{port}/0")
        await RedisCacheStore(other_client, "gw").set("k", b"answer", 60)
        await other_client.aclose()
        await until(lambda: store.presence.may_exist("k"), "announcements did not resume")
        assert await store.get("k") == b"answer"
        follower.cancel()
        await client.aclose()

    asyncio.run(main())


def test_a_gateway_miss_sends_no_get(private_redis: tuple[int, list[subprocess.Popen[bytes]]],
                                     upstream: FakeUpstreamThread) -> None:
    port, _ = private_redis

    async def log_every_command() -> None:
        client = Redis.from_url(f"redis://127.0.0.1:{port}/0")
        await client.config_set("slowlog-log-slower-than", 0)  # a private Redis: log every command
        await client.config_set("slowlog-max-len", 100_000)
        await client.aclose()

    asyncio.run(log_every_command())
    gw = Gateway(cache_config(upstream, redis_url=f"redis://127.0.0.1:{port}/0"))

    async def gets() -> int:
        """GETs of response-cache entries so far (not the key store's own GETs, which a request
        makes when its cached key lookup is over a second old: a loaded machine got there)."""
        client = Redis.from_url(f"redis://127.0.0.1:{port}/0")
        logged = await client.slowlog_get(100_000)
        await client.aclose()
        return sum(1 for e in logged if e["command"].startswith(b"GET gw:rc:"))

    async def subscribed() -> None:
        client = Redis.from_url(f"redis://127.0.0.1:{port}/0")
        await until(lambda: _numsub(client), "the gateway never subscribed")
        await until(lambda: _scanned(client), "the gateway never re-read the stored names")  # SCAN follows
        await client.aclose()

    async def _scanned(client: Any) -> bool:
        return any(entry["command"].upper().startswith(b"SCAN") for entry in await client.slowlog_get(100_000))

    async def _numsub(client: Any) -> bool:
        return bool((await client.pubsub_numsub("gw:rc:stored"))[0][1])

    try:
        asyncio.run(subscribed())
        before = asyncio.run(gets())
        contents = [f"q-{uuid.uuid4()}" for _ in range(3)]
        for content in contents:
            assert ask(gw, content).headers["x-gateway-cache"] == "miss"
        assert asyncio.run(gets()) == before  # three misses, not one GET
        assert ask(gw, contents[0]).headers["x-gateway-cache"] == "hit"
        assert asyncio.run(gets()) == before + 1  # the hit reads its entry
    finally:
        gw.stop()


def test_new_redis_connections_do_not_read_package_metadata(monkeypatch: pytest.MonkeyPatch) -> None:
    """redis-py looks its own version up on disk for every new connection unless told it; that
    read ran on the event loop (16 ms cold on the development VM) whenever the pool grew."""
    from importlib import metadata

    from gateway.runtime.redis_client import redis_client

    looked_up: list[str] = []
    real = metadata.version
    monkeypatch.setattr(metadata, "version", lambda name: looked_up.append(name) or real(name))
    client = redis_client("redis://127.0.0.1:6379/0", 10, 1.0)  # connections are made, never connected
    for _ in range(3):
        client.connection_pool.make_connection()
    assert looked_up == []
