"""The cache never starves money (issue 17): the response cache and the prefix index keep their own
byte bound in Redis across processes, may live in a Redis of their own (`cache.redis_url`), and
a small `noeviction` Redis filled by the cache keeps answering budget checks; /readyz warns
about an eviction policy that could drop money state."""

from __future__ import annotations

import asyncio
import random
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis
from conftest import free_port, model
from redis.asyncio import Redis

from gateway.cache.prefix_index import MemoryPrefixIndex, PrefixIndex, RedisPrefixIndex
from gateway.cache.redis_sizes import PREFIX_MEMBER_BYTES, allocated, entry_charge, prefix_set_charge
from gateway.cache.response_store import RedisCacheStore
from gateway.fake_upstream import FakeUpstreamThread

TESTS = Path(__file__).resolve().parent
MASTER = "sk-master-cache-bound"


@contextmanager
def private_redis(*args: str) -> Iterator[str]:
    """A redis-server of this test's own, started with `args` (never the shared one)."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("this test needs its own redis-server binary (apt-get install redis-server)")
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    probe = redis.Redis(port=port, socket_connect_timeout=0.5)
    deadline = time.monotonic() + 10
    try:
        while True:
            try:
                probe.ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "a private redis-server did not start"
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        probe.close()
        proc.kill()
        proc.wait(5)


# --- the response cache's bound -------------------------------------------------------------

WRITER = """
import asyncio, random, sys
from redis.asyncio import Redis
from gateway.cache.response_store import RedisCacheStore

async def main(url, prefix, who, count, bound):
    client = Redis.from_url(url)
    store = RedisCacheStore(client, prefix, ttl_s=60, max_bytes=bound)
    await client.incr(prefix + ":ready")
    while not await client.exists(prefix + ":go"):
        await asyncio.sleep(0.005)
    rng = random.Random(who)
    for i in range(count):
        await store.set(f"{who}-{i}", rng.randbytes(rng.randint(20, 6000)), 60)
    await client.aclose()

asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])))
"""


async def _entries(client: Any, store: RedisCacheStore) -> dict[str, bytes]:
    names = [name async for name in client.scan_iter(match=store.key_prefix + "*", count=1000)]
    values = await client.mget(names) if names else []
    return {name[len(store.key_prefix):].decode(): value for name, value in zip(names, values, strict=True)}


def test_sizes_are_allocator_classes() -> None:
    assert [allocated(n) for n in (0, 1, 16, 100, 128, 129, 1000, 8000, 8193)] == [
        0, 8, 16, 112, 128, 160, 1024, 8192, 10240]
    assert entry_charge("k" * 64, b"x" * 1000) == 1024 + 192 + 352  # calibrated: 1,551 measured for 1,000 + key


def test_response_cache_keeps_under_its_bound_across_two_processes(redis_url: str) -> None:
    """Two processes store ~6 MB of answers at once into a 200 kB cache: afterwards the entries
    it holds add up to at most the bound, and are exactly those its bookkeeping counts."""
    prefix, bound = f"test-{uuid.uuid4().hex[:8]}", 200_000
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, redis_url, prefix, who, "1000", str(bound)],
                                cwd=TESTS.parent) for who in ("a", "b")]

    async def main() -> None:
        client = Redis.from_url(redis_url)
        deadline = time.monotonic() + 30
        while int(await client.get(prefix + ":ready") or 0) < 2:
            assert time.monotonic() < deadline, "the writers did not start"
            await asyncio.sleep(0.02)
        await client.set(prefix + ":go", 1)  # both write at the same time from here
        for writer in writers:
            while writer.poll() is None:
                await asyncio.sleep(0.05)
            assert writer.returncode == 0
        store = RedisCacheStore(client, prefix, ttl_s=60, max_bytes=bound)
        held = await _entries(client, store)
        assert sum(len(v) for v in held.values()) <= bound  # the values alone, exactly
        charged = {k.decode(): int(v) for k, v in (await client.hgetall(f"{prefix}:{{gw-rc}}:sizes")).items()}
        assert charged == {k: entry_charge(k, v) for k, v in held.items()}  # every entry counted, nothing else
        assert sum(charged.values()) == await store.bytes_charged() <= bound
        assert len(held) > 20
        await store.set("newest", b"n" * 5000, 60)
        assert (await _entries(client, store))["newest"] == b"n" * 5000
        assert await store.bytes_charged() <= bound
        await client.aclose()

    try:
        asyncio.run(main())
    finally:
        for writer in writers:
            writer.kill()
            writer.wait(5)


def test_evicted_entries_are_forgotten_by_every_replica(redis_url: str) -> None:
    async def main() -> None:
        prefix = f"test-{uuid.uuid4().hex[:8]}"
        client_a, client_b = Redis.from_url(redis_url), Redis.from_url(redis_url)
        a = RedisCacheStore(client_a, prefix, ttl_s=60, max_bytes=20_000)
        b = RedisCacheStore(client_b, prefix, ttl_s=60, max_bytes=20_000)
        follower = asyncio.get_running_loop().create_task(a.run())
        deadline = time.monotonic() + 10
        while not a.presence.synced:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        await a.set("first", b"x" * 4000, 60)
        assert a.presence.may_exist("first")
        for i in range(10):
            await b.set(f"b{i}", b"y" * 4000, 60)  # B's stores push A's entry out
        while a.presence.may_exist("first"):  # announced as evicted: A's misses skip Redis again
            assert time.monotonic() < deadline, "the eviction was never announced"
            await asyncio.sleep(0.02)
        assert await client_a.exists(a.key_prefix + "first") == 0 and await b.get("b9") == b"y" * 4000
        follower.cancel()
        for client in (client_a, client_b):
            await client.aclose()

    asyncio.run(main())


# --- the prefix index's bound ---------------------------------------------------------------


async def _fill_prefix_index(index: PrefixIndex, bound: int) -> None:
    rng = random.Random(7)
    chains = [[rng.randbytes(16) for _ in range(60)] for _ in range(30)]
    for t, chain in enumerate(chains):
        await index.record(f"tenant-{t}/m", chain, b"", 60)
        assert await index.bytes_charged() <= bound
    found = await index.lookup(["tenant-29/m", "tenant-0/m"], chains[29], b"")
    assert found["tenant-29/m"].blocks == 60  # the newest is whole
    assert (await index.lookup(["tenant-0/m"], chains[0], b""))["tenant-0/m"].blocks == 0  # the oldest went
    long = [rng.randbytes(16) for _ in range(1000)]  # one prompt larger than the whole index
    await index.record("big/m", long, b"", 60)
    warm = (await index.lookup(["big/m"], long, b""))["big/m"].blocks
    assert 0 < warm < 1000 and warm * PREFIX_MEMBER_BYTES <= bound  # its tail went: a leading run is left
    assert await index.bytes_charged() <= bound


def test_memory_prefix_index_keeps_under_its_bound() -> None:
    asyncio.run(_fill_prefix_index(MemoryPrefixIndex(max_entries=10_000, max_bytes=40_000), 40_000))


def test_redis_prefix_index_keeps_under_its_bound(redis_url: str) -> None:
    async def main() -> None:
        client, prefix = Redis.from_url(redis_url), f"test-{uuid.uuid4().hex[:8]}"
        index = RedisPrefixIndex(client, prefix, max_entries=10_000, max_bytes=40_000)
        await _fill_prefix_index(index, 40_000)
        held = {name: await client.zcard(name) async for name in client.scan_iter(match=f"{prefix}:{{gw-prefix}}:*")}
        assert sum(prefix_set_charge(name.decode(), n) for name, n in held.items()) == await index.bytes_charged()
        await client.aclose()

    asyncio.run(main())


# --- a Redis of the caches' own ---------------------------------------------------------------

LONG_PROMPT = " ".join(f"word{i}" for i in range(1400))  # over 1,024 tokens: the prefix index records it


def _config(upstream: FakeUpstreamThread, url: str, prefix: str, **extra: Any) -> dict[str, Any]:
    return {"redis_url": url, "redis_prefix": prefix, "master_key": MASTER, "require_keys": True,
            "models": [model("bound-model", "openai", upstream, upstream_model="bound-up",
                             pricing={"input_per_mtok": 1, "output_per_mtok": 2})], **extra}


async def _key(gw: Any, budget_usd: float = 1000) -> str:
    created = await gw.client.post("/admin/keys", headers={"authorization": f"Bearer {MASTER}"},
                                   json={"alias": "bound", "budget_usd": budget_usd})
    assert created.status_code == 201, created.text
    return str(created.json()["key"])


@pytest.mark.anyio
async def test_caches_on_their_own_redis_write_nothing_to_the_money_redis(
    in_process: Any, upstream: FakeUpstreamThread, redis_url: str
) -> None:
    upstream.script("bound-up", {"reply": "answer", "usage": {"prompt_tokens": 1500, "completion_tokens": 5}})
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    with private_redis() as cache_url:
        config = _config(upstream, redis_url, prefix, cache={"redis_url": cache_url})
        async with in_process(config) as gw:
            client = gw.openai(api_key=await _key(gw))
            for content in (LONG_PROMPT, LONG_PROMPT, "short question"):
                await client.chat.completions.create(model="bound-model", temperature=0,
                                                     messages=[{"role": "user", "content": content}])
            await gw.drain()
            again = await client.chat.completions.with_raw_response.create(
                model="bound-model", temperature=0, messages=[{"role": "user", "content": "short question"}])
            assert again.headers["x-gateway-cache"] == "hit"
            money, caches = Redis.from_url(redis_url), Redis.from_url(cache_url)
            money_keys = [k.decode() async for k in money.scan_iter(match=f"{prefix}:*")]
            cache_keys = [k.decode() async for k in caches.scan_iter(match=f"{prefix}:*")]
            assert money_keys  # keys, budgets, holds, counters, ledger...
            assert not [k for k in money_keys if ":rc:" in k or "{gw-rc}" in k or "{gw-prefix}" in k]
            assert [k for k in cache_keys if k.startswith(f"{prefix}:rc:{{gw-rc}}:")]  # the answers
            assert [k for k in cache_keys if k.startswith(f"{prefix}:{{gw-prefix}}:")]  # the prompt prefixes
            assert all("{gw-rc}" in k or "{gw-prefix}" in k for k in cache_keys)
            assert (await money.pubsub_numsub(f"{prefix}:rc:stored"))[0][1] == 0
            assert (await caches.pubsub_numsub(f"{prefix}:rc:stored"))[0][1] == 1
            await money.aclose()
            await caches.aclose()


# --- the measurement, scaled down: a filling cache and a small noeviction Redis -------------------

async def _fill_through_the_gateway(in_process: Any, upstream: FakeUpstreamThread, url: str,
                                    cache: dict[str, Any], requests: int) -> tuple[list[int], int]:
    """Distinct cacheable answers of ~8 kB (and long prompts) through a gateway whose money Redis
    gets 2.5 MiB more than it needs at start: the statuses, and the writes Redis refused (OOM)."""
    upstream.script("bound-up", {"reply": "z" * 8000, "usage": {"prompt_tokens": 1500, "completion_tokens": 1000}})
    async with in_process(_config(upstream, url, f"test-{uuid.uuid4().hex[:8]}", cache=cache)) as gw:
        key = await _key(gw)
        headers = {"authorization": f"Bearer {key}"}
        probe = Redis.from_url(url)
        await probe.config_set("maxmemory", (await probe.info("memory"))["used_memory"] + (5 << 19))
        statuses = []
        for i in range(requests):
            content = f"{i} {LONG_PROMPT}" if i % 4 == 0 else f"distinct question {i}"
            response = await gw.client.post("/v1/chat/completions", headers=headers, json={
                "model": "bound-model", "temperature": 0, "messages": [{"role": "user", "content": content}]})
            statuses.append(response.status_code)
        await gw.drain()
        rejected = int((await probe.info("errorstats")).get("errorstat_OOM", {}).get("count", 0))
        await probe.config_set("maxmemory", 0)  # let the shutdown's writes land
        await probe.aclose()
    return statuses, rejected


@pytest.mark.anyio
async def test_a_filling_cache_never_starves_budget_checks(in_process: Any, upstream: FakeUpstreamThread) -> None:
    bounded = {"response": {"max_memory_bytes": 256 << 10}, "prefix": {"max_memory_bytes": 64 << 10}}
    with private_redis("--maxmemory-policy", "noeviction") as url:
        statuses, rejected = await _fill_through_the_gateway(in_process, upstream, url, bounded, 400)
    assert statuses == [200] * 400 and rejected == 0
    # The control: the same traffic with bounds larger than Redis (as before the bound) starves it.
    unbounded = {"response": {"max_memory_bytes": 1 << 30}, "prefix": {"max_memory_bytes": 1 << 30}}
    with private_redis("--maxmemory-policy", "noeviction") as url:
        statuses, rejected = await _fill_through_the_gateway(in_process, upstream, url, unbounded, 400)
    assert 503 in statuses and rejected > 0


# --- /readyz ---------------------------------------------------------------------------------------

@pytest.mark.anyio
@pytest.mark.parametrize(("args", "warning"), [
    (("--maxmemory-policy", "allkeys-lru"), "maxmemory-policy is allkeys-lru"),
    (("--maxmemory-policy", "volatile-lru"), "maxmemory-policy is volatile-lru"),
    (("--maxmemory-policy", "noeviction"), None),
    (("--rename-command", "CONFIG", ""), "could not check maxmemory-policy"),
])
async def test_readyz_warns_about_an_eviction_policy(in_process: Any, upstream: FakeUpstreamThread,
                                                     args: tuple[str, ...], warning: str | None) -> None:
    with private_redis(*args) as url:
        config = _config(upstream, url, "gw")
        async with in_process(config) as gw:
            for _ in range(2):  # read once, then kept
                ready = await gw.client.get("/readyz", headers={"authorization": f"Bearer {MASTER}"})
                assert ready.status_code == 200
                warnings = ready.json().get("warnings", [])
                assert (warning is None and warnings == []) or (len(warnings) == 1 and warning in warnings[0])
            if warning:  # shown to operators only
                assert "warnings" not in (await gw.client.get("/readyz")).json()


def test_cache_redis_url_is_redacted_and_optional(price_table: Any) -> None:
    from gateway.config.schema import parse_config
    from gateway.config.settings import resolve_settings

    base: dict[str, Any] = {"models": [{"name": "m", "provider": "openai", "api_key": "sk-x-123456",
                                        "pricing": {"input_per_mtok": 1, "output_per_mtok": 1}}]}
    assert resolve_settings(parse_config(base), price_table).cache_redis_url is None
    settings = resolve_settings(parse_config({**base, "cache": {"redis_url": "redis://:hunter22@cache:6379/1"}}),
                                price_table)
    assert settings.cache_redis_url == "redis://:hunter22@cache:6379/1" and "hunter22" in settings.secrets()
