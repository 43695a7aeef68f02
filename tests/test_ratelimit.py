"""RPM/TPM limits per key: atomic, shared across processes through Redis, with retry-after."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

import pytest
from conftest import free_port
from redis.asyncio import Redis

from gateway.access.keys import VirtualKey
from gateway.access.ratelimit import Admission, MemoryRateLimiter, RateLimiter, RedisRateLimiter
from gateway.errors import RateLimitExceeded

Scenario = Callable[[RateLimiter, RateLimiter], Coroutine[Any, Any, None]]


def vkey(rpm: int | None = None, tpm: int | None = None) -> VirtualKey:
    return VirtualKey(id=f"key-{uuid.uuid4().hex[:8]}", created_at=datetime.now(UTC), rpm=rpm, tpm=tpm)


def run_on_both(redis_url: str, scenario: Scenario) -> None:
    """The scenario gets two limiters: one memory limiter twice, or two Redis limiters on two
    separate clients (two processes) sharing a prefix."""
    memory = MemoryRateLimiter()
    asyncio.run(scenario(memory, memory))

    async def on_redis() -> None:
        prefix = f"test-{uuid.uuid4().hex[:8]}"
        a, b = Redis.from_url(redis_url), Redis.from_url(redis_url)
        try:
            await scenario(RedisRateLimiter(a, prefix, batch_s=0), RedisRateLimiter(b, prefix, batch_s=0))
        finally:
            await a.aclose()
            await b.aclose()

    asyncio.run(on_redis())


def test_rpm_is_shared_across_processes(redis_url: str) -> None:
    async def scenario(a: RateLimiter, b: RateLimiter) -> None:
        key = vkey(rpm=5)
        outcomes = []
        for i in range(10):
            try:
                await (a if i % 2 else b).admit(key, 0)
                outcomes.append(True)
            except RateLimitExceeded as exc:
                assert exc.status_code == 429 and exc.code == "rate_limit_exceeded" and exc.kind is None
                assert exc.headers["retry-after"] == "12"  # one request every 60/5 s
                assert 11 < exc.retry_after_s <= 12
                outcomes.append(False)
        assert outcomes == [True] * 5 + [False] * 5
        await a.admit(vkey(rpm=5), 0)  # other keys are unaffected

    run_on_both(redis_url, scenario)


def test_concurrent_admissions_never_pass_the_limit(redis_url: str) -> None:
    async def scenario(a: RateLimiter, b: RateLimiter) -> None:
        key = vkey(rpm=20, tpm=10_000)

        async def one(i: int) -> bool:
            try:
                await (a if i % 2 else b).admit(key, 400)
                return True
            except RateLimitExceeded:
                return False

        assert sum(await asyncio.gather(*(one(i) for i in range(60)))) == 20

    run_on_both(redis_url, scenario)


def test_tpm_charges_estimates_and_corrects(redis_url: str) -> None:
    async def scenario(a: RateLimiter, b: RateLimiter) -> None:
        key = vkey(tpm=1000)
        big = await a.admit(key, 600)
        with pytest.raises(RateLimitExceeded) as info:
            await b.admit(key, 500)  # 1100 > 1000: wait for 100 tokens = 6 s
        assert 5.9 < info.value.retry_after_s <= 6 and info.value.headers["retry-after"] == "6"
        await b.admit(key, 400)
        await a.correct(big, 100)  # the response used 100 tokens, not 600: 500 back
        await b.admit(key, 500)
        with pytest.raises(RateLimitExceeded):
            await a.admit(key, 1)
        with pytest.raises(RateLimitExceeded, match="more than the 1000 tokens per minute") as too_big:
            await a.admit(vkey(tpm=1000), 1001)
        assert too_big.value.headers["retry-after"] == "60"

    run_on_both(redis_url, scenario)


def test_buckets_refill(redis_url: str) -> None:
    async def scenario(a: RateLimiter, b: RateLimiter) -> None:
        key = vkey(rpm=6000, tpm=600)  # 10 tokens per second
        start = time.monotonic()
        await a.admit(key, 600)
        with pytest.raises(RateLimitExceeded) as info:
            await b.admit(key, 5)
        elapsed = time.monotonic() - start  # what refilled since the bucket was emptied (a loaded machine: more)
        wait = info.value.retry_after_s
        assert 0.5 - elapsed - 0.01 <= wait <= 0.5 and info.value.headers["retry-after"] == "1"
        await asyncio.sleep(wait + 0.05)  # (the refill itself is what is tested)
        await b.admit(key, 5)
        unlimited = vkey()
        for _ in range(100):
            await a.admit(unlimited, 10**6)

    run_on_both(redis_url, scenario)


def test_a_full_bucket_admits_its_burst_whatever_the_clock_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    """At this reading (ms), now + 60,000 crosses 2**22 and rounds up: a key's first request was
    refused ("retry in 0.00 s") for a minute in every doubling of the monotonic clock."""
    now_ms = 4164304.4285714286
    monkeypatch.setattr(time, "monotonic", lambda: now_ms / 1000)
    limiter = MemoryRateLimiter()
    batch: Any = None  # the memory limiter sends nothing
    for rpm, tpm, tokens, burst in ((1, None, 0, 1), (7, None, 0, 7), (None, 600, 200, 3)):
        key = vkey(rpm=rpm, tpm=tpm)
        for _ in range(burst):
            assert limiter.queue_admit(batch, key, tokens)([]) == Admission(key.id, tpm, tokens)
        with pytest.raises(RateLimitExceeded) as info:
            limiter.queue_admit(batch, key, tokens)([])
        assert info.value.retry_after_s == pytest.approx(60 / burst)


def test_redis_down_admits(caplog: pytest.LogCaptureFixture) -> None:
    """Rate limits protect upstreams, they are not money: with Redis down, requests pass (logged)."""
    async def scenario() -> None:
        client = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.2)
        limiter = RedisRateLimiter(client, batch_s=0)
        key = vkey(rpm=1)
        admitted = [await limiter.admit(key, 1) for _ in range(3)]  # rpm 1, yet all three pass
        assert admitted == [Admission(key.id, None, 1)] * 3
        limited = vkey(tpm=10)
        admission = await limiter.admit(limited, 5)
        assert admission == Admission(limited.id, 10, 5)
        await limiter.correct(admission, 1)  # the correction cannot be written: logged, not raised
        await client.aclose()

    with caplog.at_level(logging.WARNING, logger="gateway.ratelimit"):
        asyncio.run(scenario())
    messages = [r.getMessage() for r in caplog.records]
    assert sum("Redis unavailable, admitting" in m for m in messages) == 4
    assert any("could not write token corrections" in m for m in messages)
