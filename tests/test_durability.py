"""Durability under load (issue 17): two `gateway serve` replicas on one PostgreSQL (a schema of
each test's own) and one private Redis, a keyed load through both, and Redis or PostgreSQL
failing underneath it. Money is compared as integers (pico-USD): the sum of the answers'
`usage.cost` == the ledger (one row per 200) == `/v1/spend` == `/admin/spend` == the sum over both
replicas of `gateway_spend_usd_total`. Background work (settlements, batches, journals) is waited
for as a condition with a deadline, never with a fixed sleep."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import orjson
import pytest
import redis
from conftest import Gateway, free_port, model, start_redis_server

from gateway.fake_upstream import FakeUpstreamThread
from gateway.tokens.counter import TokenCounter

MASTER = "master-durability-0123456789"
ADMIN = {"Authorization": f"Bearer {MASTER}"}
PICO = 10**12
HI: Any = [{"role": "user", "content": "hi"}]
UP = "dur-up"
PRICES = {"input_per_mtok": 1.234567, "output_per_mtok": 3.333333}
USAGE = {"prompt_tokens": 8, "completion_tokens": 20, "total_tokens": 28}
# 8 input tokens at $1.234567/M and 20 output at $3.333333/M: 9,876,536 + 66,666,660 pico a request.
COST_PICO = 8 * 1_234_567 + 20 * 3_333_333


def pico(usd: Any) -> int:
    """An amount in USD (a JSON float, or an exact decimal string) as integer pico-USD."""
    return int(round(Decimal(repr(usd) if isinstance(usd, float) else str(usd)) * PICO))


def config(upstream: FakeUpstreamThread, redis_url: str, database_url: str, schema: str, prefix: str,
           journals: Path) -> dict[str, Any]:
    """One replica's config: the Redis prefix and the schema shared, the journals its own."""
    journals.mkdir(parents=True, exist_ok=True)
    return {
        "models": [model("dur", "openai", upstream, upstream_model=UP, pricing=PRICES)],
        "master_key": MASTER, "require_keys": True,
        "redis_url": redis_url, "redis_prefix": prefix,
        "database_url": database_url, "database": {"schema_name": schema, "migrate_on_start": True, "timeout_s": 2},
        "budgets": {"journal_path": str(journals / "spend.jsonl")},
        "ledger": {"journal_path": str(journals / "ledger.jsonl")},
        "cache": {"response": {"enabled": False}, "prefix": {"enabled": False}},
    }


@contextlib.contextmanager
def replicas(upstream: FakeUpstreamThread, redis_url: str, database_urls: list[str], schema: str,
             tmp_path: Path, prefix: str = "") -> Iterator[list[Gateway]]:
    prefix = prefix or f"dur-{uuid.uuid4().hex[:8]}"
    started: list[Gateway] = []
    try:
        for i, url in enumerate(database_urls):
            started.append(Gateway(config(upstream, redis_url, url, schema, prefix, tmp_path / f"replica-{i}")))
        yield started
    finally:
        for gw in started:
            gw.stop()


def new_key(gw: Gateway, **fields: Any) -> tuple[str, str]:
    resp = httpx.post(f"{gw.url}/admin/keys", json=fields, headers=ADMIN, timeout=10)
    assert resp.status_code == 201, resp.text
    return resp.json()["id"], resp.json()["key"]


@dataclass
class Answer:
    replica: int
    sent: float  # time.monotonic()
    done: float
    status: int
    body: dict[str, Any]
    headers: httpx.Headers

    @property
    def cost_pico(self) -> int:
        """usage.cost (a JSON float) in pico-USD, checked against the exact x-gateway-cost-usd."""
        from_usage = pico(self.body["usage"]["cost"])
        assert from_usage == pico(self.headers["x-gateway-cost-usd"])
        return from_usage


async def ask(client: httpx.AsyncClient, replica: int, secret: str, **extra: Any) -> Answer:
    sent = time.monotonic()
    resp = await client.post("/v1/chat/completions", headers={"Authorization": f"Bearer {secret}"},
                             json={"model": "dur", "messages": HI, **extra})
    return Answer(replica, sent, time.monotonic(), resp.status_code, resp.json(), resp.headers)


class Load:
    """`workers` concurrent loops sending keyed requests, alternately to each replica, until stopped."""

    def __init__(self, gateways: list[Gateway], secret: str, workers: int = 8, **extra: Any) -> None:
        self.clients = [httpx.AsyncClient(base_url=gw.url, timeout=30) for gw in gateways]
        self.secret = secret
        self.extra = extra
        self.answers: list[Answer] = []
        self._stop = asyncio.Event()
        self._tasks = [asyncio.ensure_future(self._loop(i)) for i in range(workers)]

    async def _loop(self, worker: int) -> None:
        n = worker
        while not self._stop.is_set():
            replica = n % len(self.clients)
            self.answers.append(await ask(self.clients[replica], replica, self.secret, **self.extra))
            n += 1
            if self.answers[-1].status != 200:
                await asyncio.sleep(0.01)  # not a wait for background work: a failing loop, paced

    async def until(self, done: Callable[[list[Answer]], bool], timeout: float = 30) -> None:
        """Let the load run until `done(answers)` holds."""
        deadline = time.monotonic() + timeout
        while not done(self.answers):
            assert time.monotonic() < deadline, f"load: condition not met after {timeout}s"
            assert not any(t.done() for t in self._tasks), [t.exception() for t in self._tasks if t.done()]
            await asyncio.sleep(0.02)

    async def stop(self) -> list[Answer]:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        for client in self.clients:
            await client.aclose()
        return self.answers


def ok_since(t: float, n: int) -> Callable[[list[Answer]], bool]:
    """At least `n` answers of 200 to requests sent after `t`."""
    return lambda answers: sum(1 for a in answers if a.sent > t and a.status == 200) >= n


def eventually(check: Callable[[], Any], timeout: float = 30) -> Any:
    """Poll `check` until it returns without an AssertionError (background work landing)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def ledger_rows(gw: Gateway) -> list[dict[str, Any]]:
    resp = httpx.get(f"{gw.url}/admin/ledger", params={"format": "jsonl"}, headers=ADMIN, timeout=30)
    assert resp.status_code == 200, resp.text
    return [orjson.loads(line) for line in resp.text.splitlines()]


def own_spend(gw: Gateway, secret: str) -> dict[str, Any]:
    resp = httpx.get(f"{gw.url}/v1/spend", headers={"Authorization": f"Bearer {secret}"}, timeout=10)
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def metric_pico(gw: Gateway, name: str) -> int:
    """The sum of a money metric's samples on one replica, exactly."""
    samples = [line.rpartition(" ")[2] for line in gw.metrics().splitlines() if line.startswith(name + "{")]
    return sum(pico(s) for s in samples)


def books_agree(gateways: list[Gateway], key_id: str, secret: str, answers: list[Answer]) -> dict[str, int]:
    """Every record of the money agrees with the 200s, to the pico; returns the figures."""
    ok = [a for a in answers if a.status == 200]
    expected = sum(a.cost_pico for a in ok)

    def ledger_complete() -> list[dict[str, Any]]:
        rows = ledger_rows(gateways[0])
        assert len(rows) == len(ok), f"ledger: {len(rows)} rows for {len(ok)} answers of 200"
        return rows

    rows = eventually(ledger_complete)
    assert sorted(r["request_id"] for r in rows) == sorted(a.headers["x-request-id"] for a in ok)
    assert {r["key_id"] for r in rows} == {key_id}
    assert sum(r["cost_pico"] for r in rows) == expected

    def spend_settled() -> dict[str, Any]:
        spend = own_spend(gateways[1], secret)
        assert (pico(spend["spend_usd"]), spend["reserved_usd"]) == (expected, 0), spend
        return spend

    eventually(spend_settled)
    assert pico(own_spend(gateways[0], secret)["spend_usd"]) == expected
    by_key = httpx.get(f"{gateways[1].url}/admin/spend", params={"group_by": "key", "source": "ledger"},
                       headers=ADMIN, timeout=10).json()["data"]
    assert [(g["group"], pico(g["spend_usd"])) for g in by_key] == [(key_id, expected)]
    stats = httpx.get(f"{gateways[0].url}/admin/spend", params={"group_by": "key"}, headers=ADMIN,
                      timeout=10).json()["data"]
    assert [(g["group"], pico(g["spend_usd"])) for g in stats] == [(key_id, expected)]
    metric = sum(metric_pico(gw, "gateway_spend_usd_total") for gw in gateways)
    assert metric == expected
    return {"ok": len(ok), "ledger_rows": len(rows), "spend_pico": expected}


def stop_redis(server: subprocess.Popen[bytes]) -> None:
    server.terminate()
    server.wait(10)


def test_a_redis_flush_and_a_restart_without_persistence_lose_no_key_and_no_spend(
        upstream: FakeUpstreamThread, database_url: str, pg_schema: str, tmp_path: Path) -> None:
    upstream.script(UP, {"usage": USAGE, "latency_ms": 50})
    port = free_port()
    server = start_redis_server(port)  # no data dir: a restart comes back empty
    url = f"redis://127.0.0.1:{port}/0"
    try:
        with replicas(upstream, url, [database_url, database_url], pg_schema, tmp_path) as gws:
            key_id, secret = new_key(gws[0], alias="load", team="ml", budget_usd="1")

            async def scenario() -> tuple[list[Answer], float, float]:
                nonlocal server
                load = Load(gws, secret)
                await load.until(ok_since(0, 40))
                with redis.Redis.from_url(url) as own:
                    own.flushall()
                await load.until(ok_since(time.monotonic(), 40))
                down = time.monotonic()
                stop_redis(server)
                await load.until(lambda answers: sum(1 for a in answers if a.sent > down) >= 40)
                server = start_redis_server(port)  # the same port, no data: everything is gone
                up = time.monotonic()
                await load.until(ok_since(up, 60))
                return await load.stop(), down, up

            answers, down, up = asyncio.run(scenario())
            statuses = {s: sum(1 for a in answers if a.status == s) for s in {a.status for a in answers}}
            outside = [(a.status, a.body) for a in answers
                       if a.status != 200 and not (a.status == 503 and a.sent < up and a.done > down)]
            assert outside == [], statuses  # no 401 after it is back, no other 5xx, no 503 outside the outage
            assert {a.body["error"]["code"] for a in answers if a.status == 503} == {"service_unavailable"}
            # Fail closed: what was sent and answered while Redis was down was refused, never admitted unchecked.
            assert {a.status for a in answers if down < a.sent and a.done < up} == {503}
            # Some requests were admitted before Redis went and answered after: settled while it was down.
            assert any(a.status == 200 and a.sent < down < a.done for a in answers)
            with redis.Redis.from_url(url) as own:
                assert own.dbsize() > 0  # the restarted Redis was repopulated
            figures = books_agree(gws, key_id, secret, answers)
            assert figures["ok"] == statuses[200]
    finally:
        stop_redis(server)


def test_redis_evicting_under_maxmemory_loses_no_key_and_no_spend(
        upstream: FakeUpstreamThread, database_url: str, pg_schema: str, tmp_path: Path) -> None:
    upstream.script(UP, {"usage": USAGE, "latency_ms": 10})
    port = free_port()
    server = start_redis_server(port)
    url = f"redis://127.0.0.1:{port}/0"
    own = redis.Redis.from_url(url)
    # allkeys-lru sampling one key per eviction: the gateway's hot keys are evicted too, not only junk.
    own.config_set("maxmemory", "3mb")
    own.config_set("maxmemory-policy", "allkeys-lru")
    own.config_set("maxmemory-samples", "1")
    prefix = f"dur-{uuid.uuid4().hex[:8]}"
    try:
        with replicas(upstream, url, [database_url, database_url], pg_schema, tmp_path, prefix) as gws:
            key_id, secret = new_key(gws[0], alias="evicted", team="ml", budget_usd="1")
            watched = {f"{prefix}:{{gw-keys}}:k:{key_id}": 0, f"{prefix}:{{gw-budget}}:spend:key:{key_id}:total": 0}
            junk = b"x" * 20_000

            async def scenario() -> list[Answer]:
                load = Load(gws, secret)
                await load.until(ok_since(0, 20))
                assert all(own.exists(name) for name in watched)
                start = time.monotonic()
                for i in range(2000):  # 40 MB through a 3 MB Redis while the load runs
                    own.set(f"junk:{i}", junk)
                    if i % 50 == 49:
                        for name in watched:
                            watched[name] += not own.exists(name)
                        await load.until(ok_since(start, i // 20))
                await load.until(ok_since(start, 120))
                return await load.stop()

            answers = asyncio.run(scenario())
            assert int(own.info("stats")["evicted_keys"]) > 1000
            assert min(watched.values()) > 0, watched  # the key's record and its spend counter were evicted
            assert [(a.status, a.body) for a in answers if a.status != 200] == []  # never a 401, nor anything else
            books_agree(gws, key_id, secret, answers)
    finally:
        own.close()
        stop_redis(server)


# 16 output tokens: the fewest the gateway ever sends as max_tokens (a cap below
# `budgets.min_capped_output_tokens` is refused instead), so the fake upstream, which does not read
# max_tokens, never writes more than it was allowed; 8 input tokens, exactly the gateway's count.
HONEST = {"prompt_tokens": 8, "completion_tokens": 16, "total_tokens": 24}
HONEST_PICO = 8 * 1_234_567 + 16 * 3_333_333  # 63,209,864


@pytest.mark.parametrize("max_tokens", [20, None])
def test_a_burst_of_240_on_two_replicas_never_passes_the_budget(
        upstream: FakeUpstreamThread, redis_url: str, database_url: str, pg_schema: str, tmp_path: Path,
        max_tokens: int | None) -> None:
    assert TokenCounter().count_messages(HI, UP) == HONEST["prompt_tokens"]
    upstream.script(UP, {"usage": HONEST, "output_tokens": 16, "latency_ms": 50})
    budget = 5_000_000_000  # $0.005: 79 answers at most
    with replicas(upstream, redis_url, [database_url, database_url], pg_schema, tmp_path) as gws:
        key_id, secret = new_key(gws[0], alias="burst", budget_usd=str(Decimal(budget) / PICO))
        extra = {"max_tokens": max_tokens} if max_tokens else {}

        async def burst() -> list[Answer]:
            clients = [httpx.AsyncClient(base_url=gw.url, timeout=30, limits=httpx.Limits(max_connections=None))
                       for gw in gws]
            try:
                return list(await asyncio.gather(*(ask(clients[i % 2], i % 2, secret, **extra) for i in range(240))))
            finally:
                for client in clients:
                    await client.aclose()

        answers = asyncio.run(burst())
        statuses = {s: sum(1 for a in answers if a.status == s) for s in {a.status for a in answers}}
        assert set(statuses) == {200, 429}, statuses  # zero 503s: Redis is healthy, a busy pool is no outage
        assert {a.body["error"]["code"] for a in answers if a.status == 429} == {"budget_exceeded"}
        sent = [call["body"].get("max_tokens") for call in upstream.calls(UP)]
        assert len(sent) == statuses[200] and min(sent) >= HONEST["completion_tokens"]  # it wrote what it was allowed
        assert {a.cost_pico for a in answers if a.status == 200} == {HONEST_PICO}
        figures = books_agree(gws, key_id, secret, answers)
        assert figures["spend_pico"] == statuses[200] * HONEST_PICO <= budget


class PostgresProxy:
    """127.0.0.1:<port> -> PostgreSQL, on a thread of its own (the gateways are other processes):
    `stop` refuses new connections and cuts every open one, `start` listens again on the same port."""

    def __init__(self, target: str) -> None:
        parts = urlsplit(target)
        self.target = (parts.hostname or "127.0.0.1", parts.port or 5432)
        self.port = free_port()
        self.url = target.replace(parts.netloc, f"{parts.username or 'postgres'}@127.0.0.1:{self.port}")
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def start(self) -> None:
        async def listen() -> None:
            self._server = await asyncio.start_server(self._connect, "127.0.0.1", self.port)

        self._run(listen())

    def stop(self) -> None:
        async def close() -> None:
            assert self._server is not None
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            await self._server.wait_closed()

        self._run(close())
        with pytest.raises(OSError):  # refused from now on
            socket.create_connection(("127.0.0.1", self.port), 1).close()

    def close(self) -> None:
        if self._server is not None and self._server.is_serving():
            self.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    async def _connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self._writers |= {writer, up_writer}
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()
        self._writers.discard(writer)


def in_postgresql(database_url: str, schema: str, key_id: str) -> tuple[int, int, int, int]:
    """(ledger rows, distinct record ids, their sum of cost_pico, the key's settled spend)."""
    async def read() -> tuple[int, int, int, int]:
        conn = await asyncpg.connect(database_url)
        try:
            rows = await conn.fetchrow(f"SELECT count(*), count(DISTINCT record_id), coalesce(sum(cost_pico), 0) "
                                       f"FROM {schema}.ledger")
            spent = await conn.fetchval(f"SELECT coalesce(sum(spent_pico), 0) FROM {schema}.key_spend "
                                        f"WHERE key_id = $1", key_id)
            return rows[0], rows[1], int(rows[2]), int(spent)
        finally:
            await conn.close()

    return asyncio.run(read())


def test_postgresql_unreachable_mid_load_loses_and_doubles_nothing(
        upstream: FakeUpstreamThread, redis_url: str, database_url: str, pg_schema: str, tmp_path: Path) -> None:
    upstream.script(UP, {"usage": USAGE, "latency_ms": 20})
    proxy = PostgresProxy(database_url)
    proxy.start()
    try:
        # Replica 0 reaches PostgreSQL through the proxy, replica 1 directly.
        with replicas(upstream, redis_url, [proxy.url, database_url], pg_schema, tmp_path) as gws:
            key_id, secret = new_key(gws[1], alias="pg-down", team="ml", budget_usd="1")

            def behind() -> list[str]:
                ready = httpx.get(f"{gws[0].url}/readyz", headers=gws[0].ops_headers, timeout=10)
                assert ready.status_code == 200, ready.text  # still serving: the ledger never blocks requests
                warnings = ready.json().get("warnings", [])
                assert any(w.startswith("ledger: behind") for w in warnings), warnings
                return list(warnings)

            async def scenario() -> tuple[list[Answer], float, float]:
                load = Load(gws, secret)
                await load.until(ok_since(0, 30))
                down = time.monotonic()
                proxy.stop()
                await load.until(lambda answers: sum(1 for a in answers if a.sent > down and a.replica == 0
                                                     and a.status == 200) >= 60)
                await asyncio.to_thread(eventually, behind)
                up = time.monotonic()
                proxy.start()
                await load.until(ok_since(up, 40))
                return await load.stop(), down, up

            answers, down, up = asyncio.run(scenario())
            assert [(a.status, a.body) for a in answers if a.status != 200] == []  # served throughout
            assert sum(1 for a in answers if down < a.sent < up and a.replica == 0) >= 60
            figures = books_agree(gws, key_id, secret, answers)
            expected = figures["spend_pico"]

            def replayed() -> None:
                assert in_postgresql(database_url, pg_schema, key_id) == (figures["ok"], figures["ok"], expected,
                                                                          expected)

            eventually(replayed)
            ready = httpx.get(f"{gws[0].url}/readyz", headers=gws[0].ops_headers, timeout=10).json()
            assert "warnings" not in ready, ready
        assert list((tmp_path / "replica-0").iterdir()) == []  # the journals replayed and gone
        assert in_postgresql(database_url, pg_schema, key_id)[:3] == (figures["ok"], figures["ok"], expected)
    finally:
        proxy.close()
