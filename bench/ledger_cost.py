"""What writing the spend ledger adds per request, in process: building the record from a Call
(`Call.ledger_record`) plus `Ledger.add` (a buffer append) on the request's path, and the
background flush's cost per record (one Redis pipeline per batch, XADD + EXPIREAT).

    python bench/ledger_cost.py [--redis redis://127.0.0.1:6379/0]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from datetime import UTC, datetime

from gateway.access.gate import Grant
from gateway.access.keys import VirtualKey
from gateway.config.schema import LedgerConfig
from gateway.config.settings import ModelSpec
from gateway.ledger.store import MemoryLedger
from gateway.money.pricing import Usage, price_usage
from gateway.pipeline.exchange import Call


def _call(spec: ModelSpec) -> Call:
    call = Call(state=None, request_id=uuid.uuid4().hex)  # type: ignore[arg-type]
    call.spec, call.team = spec, "research"
    call.grant = Grant(VirtualKey(id="k_123", created_at=datetime.now(UTC), alias="bench", team="research"))
    return call


def _spec() -> ModelSpec:
    from gateway.app import load_settings

    return next(iter(load_settings(None).models.values()))


def on_path(n: int, ledger: object) -> list[float]:
    spec = _spec()
    usage = Usage(input=1000, cached_input=200, output=300, reasoning=50)
    cost = price_usage(usage, spec.price)
    call = _call(spec)
    samples = []
    for _ in range(n):
        t = time.perf_counter_ns()
        ledger.add(call.ledger_record(usage, cost, "200"))  # type: ignore[attr-defined]
        samples.append((time.perf_counter_ns() - t) / 1000)
    return samples


async def flush_cost(url: str, n: int) -> float:
    from redis.asyncio import Redis

    from gateway.ledger.store_redis import RedisLedger

    client = Redis.from_url(url)
    ledger = RedisLedger(client, f"bench-{uuid.uuid4().hex[:6]}", LedgerConfig())
    on_path(n, ledger)
    t = time.perf_counter()
    await ledger.flush()
    per = (time.perf_counter() - t) / n * 1e6
    await client.aclose()
    return per


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis", default=None)
    parser.add_argument("-n", type=int, default=20000)
    args = parser.parse_args()
    samples = on_path(args.n, MemoryLedger(LedgerConfig()))
    samples.sort()
    print(f"on the request path (record + add), n={args.n}: p50 {statistics.median(samples):.2f} us, "
          f"p99 {samples[int(len(samples) * 0.99)]:.2f} us")
    if args.redis:
        for batch in (40, 200, 1000):
            per = asyncio.run(flush_cost(args.redis, batch))
            print(f"background flush to Redis, batch {batch}: {per:.2f} us/record")


if __name__ == "__main__":
    main()
