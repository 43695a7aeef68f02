"""Money and keys that survive anything Redis does: PostgreSQL (a schema of each test's own, the
migrations applied) is the record of keys, teams and settled spend; Redis (the session's private
one, under a prefix of each test's own, or a redis-server a test starts and flushes) only caches
keys and holds the live counters. A flush never makes a key unknown, never un-revokes one and
never resets spend; a settlement made while PostgreSQL is unreachable is journaled and replayed
exactly once."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest
from conftest import InProcess, free_port, model, start_redis_server
from redis.asyncio import Redis

from gateway.access.budgets import Counter
from gateway.access.budgets_pg import RecordedBudgets
from gateway.access.budgets_pg_memory import RecordedMemoryBudgets
from gateway.access.journal import Settlement, SpendJournal
from gateway.access.keys import Team, VirtualKey, secret_hash
from gateway.access.keys_pg import PgKeys
from gateway.access.keys_recorded import RecordedKeyStore
from gateway.access.keys_redis import RedisKeyStore
from gateway.access.periods import period_of
from gateway.access.spend_pg import SpendRecord
from gateway.database.migrate import upgrade
from gateway.database.pool import Database
from gateway.errors import AuthenticationFailed, BudgetExceeded
from gateway.fake_upstream import FakeUpstreamThread

MASTER = "master-test-key-pg-123456"
PICO = 10**12
HI: Any = [{"role": "user", "content": "hi"}]
USAGE = {"prompt_tokens": 8, "completion_tokens": 20, "total_tokens": 28}
# 8 input tokens at $1.234567/M and 20 output at $3.333333/M: 9,876,536 + 66,666,660 pico a request.
COST_PICO = 8 * 1_234_567 + 20 * 3_333_333


@asynccontextmanager
async def migrated(url: str, schema: str, timeout_s: float = 5.0) -> AsyncIterator[Database]:
    database = Database(url, schema, timeout_s=timeout_s)
    try:
        await upgrade(database)
        yield database
    finally:
        await database.close()


async def forget(redis: Any, prefix: str) -> int:
    """Everything this test wrote to Redis, gone (a FLUSHDB of the test's own keys)."""
    names = [name async for name in redis.scan_iter(match=f"{prefix}:*", count=1000)]
    if names:
        await redis.delete(*names)
    return len(names)


class TcpProxy:
    """127.0.0.1:<port> -> PostgreSQL; `stop` makes PostgreSQL unreachable (refused, and every
    open connection cut), `start` reachable again on the same port."""

    def __init__(self, target: str) -> None:
        parts = urlsplit(target)
        self.target = (parts.hostname or "127.0.0.1", parts.port or 5432)
        self.port = free_port()
        self.url = target.replace(parts.netloc, f"{parts.username or 'postgres'}@127.0.0.1:{self.port}")
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._connect, "127.0.0.1", self.port)

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await self._server.wait_closed()

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


def recorded_budgets(redis: Any, database: Database, prefix: str, tmp_path: Path) -> RecordedBudgets:
    return RecordedBudgets(redis, SpendRecord(database), SpendJournal(tmp_path / f"{prefix}.record.jsonl"), prefix,
                           journal=SpendJournal(tmp_path / f"{prefix}.jsonl"))


def test_keys_survive_a_redis_flush_and_revoked_keys_stay_revoked(database_url: str, pg_schema: str,
                                                                  redis_url: str) -> None:
    async def scenario() -> None:
        prefix = f"test-{uuid.uuid4().hex[:8]}"
        redis = Redis.from_url(redis_url)
        async with migrated(database_url, pg_schema) as database:
            store = RecordedKeyStore(PgKeys(database), RedisKeyStore(redis, prefix, cache_ttl_s=0), cache_ttl_s=0)
            await store.set_team(Team(name="ml", budget_pico=7 * PICO, budget_period="monthly"))
            key, secret = await store.create(alias="kept", team="ml", models=["a"], tiers=[], budget_pico=PICO, rpm=5)
            doomed, doomed_secret = await store.create(alias="doomed")
            assert (await store.revoke(doomed.id)).revoked
            assert await store.authenticate(secret) == key
            assert await forget(redis, prefix) > 0
            assert await store.authenticate(secret) == key  # read from PostgreSQL, copied back to Redis
            assert await RedisKeyStore(redis, prefix).lookup(secret_hash(secret)) == key
            with pytest.raises(AuthenticationFailed, match="revoked"):
                await store.authenticate(doomed_secret)
            assert await store.get_team("ml") == Team(name="ml", budget_pico=7 * PICO, budget_period="monthly")
            other = RecordedKeyStore(PgKeys(database), RedisKeyStore(redis, prefix, cache_ttl_s=0), cache_ttl_s=0)
            assert await other.authenticate(secret) == key  # another replica
            assert [k.id for k in await store.list()] == [key.id, doomed.id]

            # Redis restored from an older snapshot: the revoked key is live there, the watermark old.
            await redis.hset(f"{prefix}:{{gw-keys}}:k:{doomed.id}", mapping={"revoked": "false", "_rev": "0"})
            await redis.delete(f"{prefix}:{{gw-keys}}:synced")
            assert await store.sync() >= 3  # everything changed recently is copied again
            with pytest.raises(AuthenticationFailed, match="revoked"):
                await store.authenticate(doomed_secret)
            # An older copy never overwrites a newer one.
            live_again = VirtualKey(id=doomed.id, created_at=doomed.created_at)
            await RedisKeyStore(redis, prefix).put_many([(live_again, secret_hash(doomed_secret), 1)], [])
            with pytest.raises(AuthenticationFailed, match="revoked"):
                await store.authenticate(doomed_secret)
        await forget(redis, prefix)
        await redis.aclose()

    asyncio.run(scenario())


def test_keys_without_redis_live_in_postgresql(database_url: str, pg_schema: str) -> None:
    async def scenario() -> None:
        async with migrated(database_url, pg_schema) as database:
            store = RecordedKeyStore(PgKeys(database), None, cache_ttl_s=0)
            key, secret = await store.create(team="ops", expires_at="2999-01-01T00:00:00Z")
            restarted = RecordedKeyStore(PgKeys(database), None, cache_ttl_s=0)
            assert await restarted.authenticate(secret) == key
            await restarted.update(key.id, alias="renamed")
            assert (await store.authenticate(secret)).alias == "renamed"
            await store.revoke(key.id)
            with pytest.raises(AuthenticationFailed, match="revoked"):
                await restarted.authenticate(secret)

    asyncio.run(scenario())


def test_spend_is_unchanged_to_the_pico_after_a_redis_flush(database_url: str, pg_schema: str, redis_url: str,
                                                            tmp_path: Path) -> None:
    async def scenario() -> None:
        prefix = f"test-{uuid.uuid4().hex[:8]}"
        redis = Redis.from_url(redis_url)
        async with migrated(database_url, pg_schema) as database:
            budgets = recorded_budgets(redis, database, prefix, tmp_path)
            team = Team(name="ml", budget_pico=10 * PICO, budget_period="monthly")
            key = VirtualKey(id="key-pg", created_at=datetime.now(UTC), team="ml", budget_pico=PICO,
                             budget_period="daily")
            amounts = [123_456_789_013, 7, 98_765_432_109]
            for amount in amounts:
                await budgets.settle(await budgets.reserve(key, team, amount + 5, hold_ttl_s=60), amount)
            await budgets.flush()
            before, team_before = await budgets.spend(key), await budgets.team_spend(team)
            assert (before.spent, before.reserved, team_before.spent) == (sum(amounts), 0, sum(amounts))

            await forget(redis, prefix)
            after, team_after = await budgets.spend(key), await budgets.team_spend(team)
            assert (after.spent, after.remaining, team_after.spent) == (before.spent, before.remaining,
                                                                         team_before.spent)

            # Counted in Redis, then Redis flushed before the batch reached PostgreSQL: the
            # confirmation puts it back; a settlement counted on the rebuilt counter is not doubled.
            await budgets.settle(await budgets.reserve(key, team, 1000, hold_ttl_s=60), 999)
            await forget(redis, prefix)
            await budgets.settle(await budgets.reserve(key, team, 1000, hold_ttl_s=60), 1)
            await budgets.flush()
            total = sum(amounts) + 999 + 1
            assert (await budgets.spend(key)).spent == total and (await budgets.team_spend(team)).spent == total
            await forget(redis, prefix)
            assert (await budgets.spend(key)).spent == total and (await budgets.team_spend(team)).spent == total
            today = period_of("daily", datetime.now(UTC))[0]
            month = period_of("monthly", datetime.now(UTC))[0]
            settled = await SpendRecord(database).settled([Counter("key:key-pg", today), Counter("team:ml", month)])
            assert [spent for spent, _ in settled.values()] == [total, total]
        await forget(redis, prefix)
        await redis.aclose()

    asyncio.run(scenario())


def test_a_batch_confirmed_between_a_rebuilds_read_and_its_creation_is_not_lost(
        database_url: str, pg_schema: str, redis_url: str, tmp_path: Path) -> None:
    """The race: a replica reads (spent, version) to rebuild a lost counter; meanwhile a batch
    commits and its confirmation finds the counter missing; then the counter is created from the
    older read. The confirmation's amount must still be counted."""
    async def scenario() -> None:
        prefix = f"test-{uuid.uuid4().hex[:8]}"
        redis = Redis.from_url(redis_url)
        async with migrated(database_url, pg_schema) as database:
            budgets = recorded_budgets(redis, database, prefix, tmp_path)
            key = VirtualKey(id="key-race", created_at=datetime.now(UTC), budget_pico=PICO, budget_period="daily")
            counter = Counter("key:key-race", period_of("daily", datetime.now(UTC))[0])
            await budgets.settle(await budgets.reserve(key, None, 600, hold_ttl_s=60), 500)
            await budgets.flush()
            await budgets.settle(await budgets.reserve(key, None, 1000, hold_ttl_s=60), 999)  # counted in Redis
            stale = (await SpendRecord(database).settled([counter]))[counter]  # the rebuild's read: 500
            await forget(redis, prefix)  # the counter is lost ...
            await budgets.flush()  # ... the 999 commits and is confirmed while it is missing ...

            async def read(_: Counter) -> tuple[int, int]:
                return stale  # ... and the counter is created from the read taken before

            budgets._read = read  # type: ignore[method-assign]
            assert stale[0] == 500 and (await budgets.spend(key)).spent == 1499
        await forget(redis, prefix)
        await redis.aclose()

    asyncio.run(scenario())


def test_a_rebuilt_counter_still_enforces_the_budget(database_url: str, pg_schema: str, redis_url: str,
                                                     tmp_path: Path) -> None:
    async def scenario() -> None:
        prefix = f"test-{uuid.uuid4().hex[:8]}"
        redis = Redis.from_url(redis_url)
        async with migrated(database_url, pg_schema) as database:
            budgets = recorded_budgets(redis, database, prefix, tmp_path)
            key = VirtualKey(id="key-tight", created_at=datetime.now(UTC), budget_pico=1000)
            await budgets.settle(await budgets.reserve(key, None, 900, hold_ttl_s=60), 900)
            await budgets.flush()
            await forget(redis, prefix)
            batch = budgets.new_batch()  # a queued reservation cannot rebuild: it says so
            finish = budgets.queue_reserve(batch, key, None, 101, hold_ttl_s=60)
            with pytest.raises(Exception, match="key:key-tight total"):
                finish(await batch.run())
            with pytest.raises(BudgetExceeded):
                await budgets.reserve(key, None, 101, hold_ttl_s=60)  # 900 spent (rebuilt) + 101 > 1000
            assert (await budgets.reserve(key, None, 100, hold_ttl_s=60)).amount == 100
        await forget(redis, prefix)
        await redis.aclose()

    asyncio.run(scenario())


def test_a_settlement_while_postgresql_is_unreachable_is_journaled_and_replayed_once(
        database_url: str, pg_schema: str, redis_url: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        prefix = f"test-{uuid.uuid4().hex[:8]}"
        redis = Redis.from_url(redis_url)
        proxy = TcpProxy(database_url)
        await proxy.start()
        async with migrated(proxy.url, pg_schema, timeout_s=2) as database:
            record_journal = SpendJournal(tmp_path / "record.jsonl")
            budgets = RecordedBudgets(redis, SpendRecord(database), record_journal, prefix,
                                      journal=SpendJournal(tmp_path / "confirm.jsonl"))
            team = Team(name="ml", budget_pico=PICO)
            key = VirtualKey(id="key-j", created_at=datetime.now(UTC), team="ml", budget_pico=PICO)
            holds = [await budgets.reserve(key, team, 100_000_000_007, hold_ttl_s=60) for _ in range(3)]
            amounts = [11_111_111_111, 22_222_222_222, 33_333_333_333]
            await budgets.settle(holds[0], amounts[0])
            await budgets.flush()

            await proxy.stop()  # PostgreSQL unreachable
            await budgets.settle(holds[1], amounts[1])
            await budgets.settle(holds[2], amounts[2])
            await budgets.flush()
            assert [(s.hold.id, s.actual) for s in record_journal.pending()] == [
                (holds[1].id, amounts[1]), (holds[2].id, amounts[2])]
            assert await budgets.replay() == 0  # still unreachable: kept
            assert budgets.backlog() == (0, 2)  # what /readyz and gateway_ledger_backlog_records report
            assert (await budgets.spend(key)).spent == sum(amounts)  # Redis counted them meanwhile
            # The first settlement journaled again (a commit that landed though the client saw an
            # error): it must not count twice.
            record_journal.append(Settlement(holds[0], amounts[0], datetime.now(UTC)))

            await proxy.start()
            assert await budgets.replay() == 3
            assert record_journal.pending() == [] and await budgets.replay() == 0 and budgets.backlog() == (0, 0)
            month = period_of("total", datetime.now(UTC))[0]
            settled = await SpendRecord(database).settled([Counter("key:key-j", month), Counter("team:ml", month)])
            assert [spent for spent, _ in settled.values()] == [sum(amounts), sum(amounts)]
            assert (await budgets.spend(key)).spent == sum(amounts)  # confirmations did not add again
            await forget(redis, prefix)
            assert (await budgets.spend(key)).spent == sum(amounts) == (await budgets.team_spend(team)).spent
        await proxy.stop()
        await forget(redis, prefix)
        await redis.aclose()

    asyncio.run(scenario())


def test_without_redis_a_restart_keeps_the_spend(database_url: str, pg_schema: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with migrated(database_url, pg_schema) as database:
            key = VirtualKey(id="key-m", created_at=datetime.now(UTC), budget_pico=1000, budget_period="weekly")
            first = RecordedMemoryBudgets(SpendRecord(database), SpendJournal(tmp_path / "r.jsonl"))
            await first.settle(await first.reserve(key, None, 700, hold_ttl_s=60), 650)
            await first.flush()
            restarted = RecordedMemoryBudgets(SpendRecord(database), SpendJournal(tmp_path / "r.jsonl"))
            assert (await restarted.spend(key)).spent == 650
            batch = restarted.new_batch()
            finish = restarted.queue_reserve(batch, key, None, 351, hold_ttl_s=60)
            with pytest.raises(BudgetExceeded):
                finish(await batch.run())
            await restarted.settle(await restarted.reserve(key, None, 300, hold_ttl_s=60), 300)
            await restarted.flush()
            assert (await restarted.spend(key)).spent == 950 == (await first.spend(key)).spent + 300

    asyncio.run(scenario())


InProcessFactory = Callable[[dict[str, Any]], AbstractAsyncContextManager[InProcess]]


def gateway_config(upstream: FakeUpstreamThread, redis_url: str, database_url: str, schema: str,
                   tmp_path: Path) -> dict[str, Any]:
    return {
        "models": [model("pg-a", "openai", upstream, upstream_model="pg-a-up",
                         pricing={"input_per_mtok": 1.234567, "output_per_mtok": 3.333333})],
        "master_key": MASTER, "require_keys": True,
        "redis_url": redis_url, "redis_prefix": f"test-{uuid.uuid4().hex[:8]}",
        "database_url": database_url, "database": {"schema_name": schema, "migrate_on_start": True},
        "budgets": {"hold_ttl_s": 30, "key_cache_ttl_s": 0, "journal_path": str(tmp_path / "spend.jsonl")},
        "cache": {"response": {"enabled": False}},
    }


async def ask(gw: InProcess, secret: str) -> Any:
    return await gw.client.post("/v1/chat/completions", headers={"Authorization": f"Bearer {secret}"},
                                json={"model": "pg-a", "messages": HI, "max_tokens": 20})


async def new_key(gw: InProcess, **fields: Any) -> tuple[str, str]:
    resp = await gw.client.post("/admin/keys", json=fields, headers={"Authorization": f"Bearer {MASTER}"})
    assert resp.status_code == 201, resp.text
    return resp.json()["id"], resp.json()["key"]


async def settled(gw: InProcess) -> None:
    """Every settlement made so far counted in Redis and committed to PostgreSQL."""
    await gw.drain()
    budgets = gw.state.access.budgets
    assert isinstance(budgets, RecordedBudgets)
    await budgets.flush()


def test_through_the_gateway_a_redis_flush_mid_run_loses_no_key_and_no_spend(
        in_process: InProcessFactory, upstream: FakeUpstreamThread, database_url: str, pg_schema: str,
        tmp_path: Path) -> None:
    port = free_port()
    server = start_redis_server(port)  # a Redis of this test's own: FLUSHALL is fine
    url = f"redis://127.0.0.1:{port}/0"

    async def scenario() -> None:
        upstream.script("pg-a-up", {"usage": USAGE, "latency_ms": 5})
        redis = Redis.from_url(url)
        async with in_process(gateway_config(upstream, url, database_url, pg_schema, tmp_path)) as gw:
            key_id, secret = await new_key(gw, alias="load", team="ml", budget_usd="1")
            revoked_id, revoked = await new_key(gw, alias="gone")
            await gw.client.delete(f"/admin/keys/{revoked_id}", headers={"Authorization": f"Bearer {MASTER}"})
            answers = []
            for wave in range(4):
                flush = [redis.flushall()] if wave in (1, 2) else []
                replies = await asyncio.gather(*(ask(gw, secret) for _ in range(15)), *flush)
                answers += replies[:15]
            assert [a.status_code for a in answers] == [200] * 60  # never a 401, nor anything else
            costs = sum(Decimal(a.headers["x-gateway-cost-usd"]) for a in answers)
            assert costs * PICO == 60 * COST_PICO
            assert (await ask(gw, revoked)).status_code == 401
            await settled(gw)
            await redis.flushall()
            spend = (await gw.client.get("/v1/spend", headers={"Authorization": f"Bearer {secret}"})).json()
            assert spend["spend_usd"] == pytest.approx(float(costs), abs=1e-15) and spend["reserved_usd"] == 0
            key = await gw.state.access.keys.get(key_id)
            assert key is not None and (await gw.state.access.budgets.spend(key)).spent == 60 * COST_PICO
            conn = await asyncpg.connect(database_url)
            try:
                row = await conn.fetchrow(f"SELECT spent_pico FROM {pg_schema}.key_spend WHERE key_id = $1", key_id)
                assert row["spent_pico"] == 60 * COST_PICO
            finally:
                await conn.close()
        await redis.aclose()

    try:
        asyncio.run(scenario())
    finally:
        server.terminate()
        server.wait(10)


def test_through_the_gateway_budgets_are_enforced_after_a_redis_flush(
        in_process: InProcessFactory, upstream: FakeUpstreamThread, database_url: str, pg_schema: str,
        tmp_path: Path) -> None:
    port = free_port()
    server = start_redis_server(port)
    url = f"redis://127.0.0.1:{port}/0"

    async def scenario() -> None:
        upstream.script("pg-a-up", {"usage": USAGE})
        redis = Redis.from_url(url)
        async with in_process(gateway_config(upstream, url, database_url, pg_schema, tmp_path)) as gw:
            # Five requests' cost and $0.00004 more: a sixth cannot even pay 16 output tokens.
            budget = Decimal(5 * COST_PICO + 40_000_000) / PICO
            _, secret = await new_key(gw, budget_usd=str(budget))
            for _ in range(5):
                assert (await ask(gw, secret)).status_code == 200
            await settled(gw)
            await redis.flushall()
            refused = await ask(gw, secret)
            assert refused.status_code == 429 and refused.json()["error"]["code"] == "budget_exceeded"
            spend = (await gw.client.get("/v1/spend", headers={"Authorization": f"Bearer {secret}"})).json()
            assert spend["spend_usd"] == pytest.approx(5 * COST_PICO / PICO, abs=1e-15)
        await redis.aclose()

    try:
        asyncio.run(scenario())
    finally:
        server.terminate()
        server.wait(10)
