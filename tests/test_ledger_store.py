"""The spend ledger's stores, in process: the bounded memory deque and the Redis daily streams
(batched writes, MAXLEN trim, EXPIREAT retention, Redis down and back), plus aggregation."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from gateway.config.schema import LedgerConfig
from gateway.ledger.report import export, spend_by, summarise
from gateway.ledger.store import LedgerRecord, MemoryLedger, iso
from gateway.ledger.store_redis import RedisLedger

NOW = datetime.now(UTC)


def rec(i: int, at: datetime = NOW, **kw: Any) -> LedgerRecord:
    base = LedgerRecord(iso(at), f"req-{i}", "k1", "alias", "team-a", "m-a", "openai", "", 10, 0, 0, 5, 0,
                        10_000_000, 0, 0, 10_000_000, 0, 20_000_000 + i, "miss", "", "200", 1.5)
    return dataclasses.replace(base, **kw)


async def collect(ledger: Any, start: datetime, end: datetime) -> list[LedgerRecord]:
    return [r async for page in ledger.pages(start, end) for r in page]


def test_memory_ledger_is_bounded_and_filters_by_time() -> None:
    async def main() -> None:
        ledger = MemoryLedger(LedgerConfig(max_memory_records=3, retention_days=35))
        for i in range(5):
            ledger.add(rec(i, NOW - timedelta(minutes=5 - i)))
        got = await collect(ledger, NOW - timedelta(days=1), NOW + timedelta(seconds=1))
        assert [r.request_id for r in got] == ["req-2", "req-3", "req-4"]  # the newest 3
        got = await collect(ledger, NOW - timedelta(minutes=2, seconds=30), NOW)
        assert [r.request_id for r in got] == ["req-3", "req-4"]
        old = MemoryLedger(LedgerConfig(retention_days=1))
        old.add(rec(9, NOW - timedelta(days=3)))
        assert await collect(old, NOW - timedelta(days=10), NOW + timedelta(days=1)) == []  # past retention

    asyncio.run(main())


def test_aggregation_and_export() -> None:
    async def main() -> None:
        ledger = MemoryLedger(LedgerConfig())
        yesterday = NOW - timedelta(days=1)
        ledger.add(rec(1, yesterday, model="m-b", tier="t", key_id="k2", team=""))
        ledger.add(rec(2, NOW, routing_saved_pico=7))
        ledger.add(rec(3, NOW, cache="hit", cost_pico=0, cache_saved_pico=11))
        start, end = NOW - timedelta(days=2), NOW + timedelta(seconds=1)
        assert await spend_by(ledger, start, end, "model") == {"m-a": 20_000_002, "m-b": 20_000_001}
        assert await spend_by(ledger, start, end, "team") == {"team-a": 20_000_002}  # no team: left out
        assert await spend_by(ledger, start, end, "tier") == {"t": 20_000_001}
        assert await spend_by(ledger, start, end, "key") == {"k1": 20_000_002, "k2": 20_000_001}
        assert await spend_by(ledger, start, end, "day") == {yesterday.date().isoformat(): 20_000_001,
                                                             NOW.date().isoformat(): 20_000_002}
        s = await summarise(ledger, start, end)
        assert (s.requests, s.spend, s.routing_saved, s.cache_saved, s.cache_hits) == (3, 40_000_003, 7, 11, 1)
        assert dict(s.by_team) == {"(no team)": 20_000_001, "team-a": 20_000_002}
        jsonl = b"".join([c async for c in export(ledger, start, end, "jsonl")]).decode().splitlines()
        assert len(jsonl) == 3 and '"request_id":"req-1"' in jsonl[0]
        csv_lines = b"".join([c async for c in export(ledger, start, end, "csv")]).decode().splitlines()
        assert csv_lines[0].startswith("time,request_id,key_id,") and len(csv_lines) == 4

    asyncio.run(main())


@pytest.fixture
def redis_ledger(redis_url: str) -> Any:
    from redis.asyncio import Redis

    def make(**config: Any) -> tuple[Any, RedisLedger]:
        client = Redis.from_url(redis_url)
        return client, RedisLedger(client, f"test-{uuid.uuid4().hex[:8]}", LedgerConfig(**config))

    return make


def test_redis_ledger_batches_trims_and_expires(redis_ledger: Any) -> None:
    async def main() -> None:
        client, ledger = redis_ledger(max_per_day=100, retention_days=35, flush_interval_s=0.05)
        yesterday = NOW - timedelta(days=1)
        for i in range(2500):
            ledger.add(rec(i))
        ledger.add(rec(9999, yesterday))
        assert await client.exists(ledger.key(NOW.date())) == 0  # nothing written until a flush
        writer = asyncio.get_running_loop().create_task(ledger.run())
        while not await client.exists(ledger.key(NOW.date())):  # the writer is under way
            await asyncio.sleep(0.01)
        ledger.stop()
        await asyncio.wait_for(writer, 10)  # it finishes what it has queued, then returns
        today_len = await client.xlen(ledger.key(NOW.date()))
        assert 100 <= today_len < 2500  # trimmed to about max_per_day (approximate MAXLEN)
        expire_at = await client.expiretime(ledger.key(NOW.date()))
        day_end = datetime.combine(NOW.date(), datetime.min.time(), UTC) + timedelta(days=36)
        assert expire_at == int(day_end.timestamp())
        got = await collect(ledger, yesterday - timedelta(seconds=1), NOW + timedelta(seconds=1))
        assert got[0].request_id == "req-9999" and len(got) == today_len + 1
        assert got[-1] == rec(2499)  # round trip: every field
        await client.aclose()

    asyncio.run(main())


def test_redis_ledger_pages_through_large_days(redis_ledger: Any) -> None:
    async def main() -> None:
        client, ledger = redis_ledger()
        for i in range(2345):
            ledger.add(rec(i, NOW - timedelta(microseconds=3000 - i)))
        await ledger.flush()
        pages = [len(p) async for p in ledger.pages(NOW - timedelta(hours=1), NOW + timedelta(hours=1))]
        assert pages == [1000, 1000, 345]
        total = await spend_by(ledger, NOW - timedelta(hours=1), NOW + timedelta(hours=1), "model")
        assert total == {"m-a": sum(20_000_000 + i for i in range(2345))}
        await client.aclose()

    asyncio.run(main())


def test_redis_down_keeps_records_until_it_answers(redis_url: str) -> None:
    from redis.asyncio import Redis

    async def main() -> None:
        dead = Redis.from_url("redis://127.0.0.1:9/0", socket_connect_timeout=0.2)
        prefix = f"test-{uuid.uuid4().hex[:8]}"
        ledger = RedisLedger(dead, prefix, LedgerConfig())
        ledger.add(rec(1))
        ledger.add(rec(2))
        await ledger.flush()  # fails: kept
        ledger._redis = live = Redis.from_url(redis_url)
        ledger.add(rec(3))
        await ledger.flush()
        got = await collect(ledger, NOW - timedelta(seconds=1), NOW + timedelta(seconds=1))
        assert [r.request_id for r in got] == ["req-1", "req-2", "req-3"]
        await live.aclose()
        await dead.aclose()

    asyncio.run(main())


def test_day_keys_use_the_hash_tag() -> None:
    ledger = RedisLedger(None, "gw", LedgerConfig())
    assert ledger.key(date(2026, 11, 26)) == "gw:{gw-ledger}:2026-11-26"
