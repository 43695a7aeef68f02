"""The spend ledger in PostgreSQL, on the machine's real PostgreSQL, each test in its own schema:
records written exactly once (retries and journal replays included), in batches, off the request
path; the local journal while PostgreSQL is unreachable, replayed with nothing lost or doubled;
retention; reading back in pages; the SQL daily aggregates equal to the ledger's sums; and the
gateway end to end (the sum of `usage.cost` == the ledger's total == `gateway_spend_usd_total`)."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import InProcess, model

from gateway.config.schema import LedgerConfig
from gateway.database.migrate import upgrade
from gateway.database.pool import Database
from gateway.fake_upstream import FakeUpstreamThread
from gateway.ledger.journal import LedgerJournal
from gateway.ledger.report import spend_by, summarise
from gateway.ledger.spend_stats import GROUPS, aggregate
from gateway.ledger.spend_stats_pg import PostgresSpendStats
from gateway.ledger.store import PAGE, LedgerRecord, iso
from gateway.ledger.store_pg import PostgresLedger
from gateway.ledger.writer import record_id
from gateway.observability.metrics import Metrics

NOW = datetime.now(UTC).replace(microsecond=123456)
DOWN_URL = "postgresql://postgres@127.0.0.1:9/test"  # nothing listens on port 9
MASTER = "master-ledger-pg-123456"


def rec(i: int, at: datetime = NOW, **kw: Any) -> LedgerRecord:
    base = LedgerRecord(iso(at), f"req-{i}", "k1", "alias", "team-a", "m-a", "openai", "", 10, 0, 0, 5, 0,
                        10_000_000, 0, 0, 10_000_000, 0, 20_000_000 + i, "miss", "", "200", 1.5)
    return dataclasses.replace(base, **kw)


@asynccontextmanager
async def migrated(url: str, schema: str) -> AsyncIterator[Database]:
    database = Database(url, schema)
    try:
        await upgrade(database)
        yield database
    finally:
        await database.close()


async def table(database: Database) -> tuple[int, int, int]:
    """(rows, distinct record ids, sum of cost_pico)."""
    pool = await database.pool()
    row = await pool.fetchrow("SELECT count(*), count(DISTINCT record_id), coalesce(sum(cost_pico), 0) FROM ledger")
    return row[0], row[1], int(row[2])


async def collect(ledger: PostgresLedger, start: datetime, end: datetime) -> list[LedgerRecord]:
    return [r async for page in ledger.pages(start, end) for r in page]


def ledger_on(database: Database, journal: Path, **config: Any) -> PostgresLedger:
    return PostgresLedger(database, LedgerConfig(**config), LedgerJournal(journal))


@pytest.mark.anyio
async def test_records_are_written_exactly_once_retries_and_replays_included(
        database_url: str, pg_schema: str, tmp_path: Path) -> None:
    async with migrated(database_url, pg_schema) as database:
        ledger = ledger_on(database, tmp_path / "ledger.jsonl")
        entries = [(record_id(), rec(i)) for i in range(300)]
        ledger.journal.append(entries[:200])
        assert await ledger.replay() == 200
        assert await table(database) == (200, 200, sum(r.cost_pico for _, r in entries[:200]))
        # The first 200 again (a batch that reached PostgreSQL though the writer saw an error) and
        # 100 new ones: the replay writes only the new ones.
        ledger.journal.append(entries)
        assert await ledger.replay() == 300 and ledger.backlog() == (0, 0)
        expected = sum(r.cost_pico for _, r in entries)
        assert await table(database) == (300, 300, expected)
        assert await ledger.replay() == 0 and ledger.journal.pending() == []
        for i in range(300, 350):  # through the queue; flushing again writes nothing twice
            ledger.add(rec(i))
        await ledger.flush()
        await ledger.flush()
        expected += sum(20_000_000 + i for i in range(300, 350))
        assert await table(database) == (350, 350, expected)
        # Two billed requests may share a client's x-request-id: both are kept.
        ledger.add(rec(1))
        await ledger.flush()
        assert (await table(database))[0] == 351


@pytest.mark.anyio
async def test_the_writer_writes_in_batches_as_soon_as_a_batch_is_full(
        database_url: str, pg_schema: str, tmp_path: Path) -> None:
    async with migrated(database_url, pg_schema) as database:
        ledger = ledger_on(database, tmp_path / "ledger.jsonl", batch_records=100, flush_interval_s=3600)
        writer = asyncio.get_running_loop().create_task(ledger.run())
        for i in range(250):
            ledger.add(rec(i))  # never awaits: the request path does not wait for PostgreSQL
        assert ledger.backlog() == (250, 0)
        for _ in range(500):  # woken by a full batch, not by the (hour-long) interval
            if (await table(database))[0] == 250:
                break
            await asyncio.sleep(0.01)
        assert await table(database) == (250, 250, sum(20_000_000 + i for i in range(250)))
        pool = await database.pool()
        transactions = await pool.fetch("SELECT xmin::text AS tx, count(*) AS n FROM ledger GROUP BY 1")
        assert sorted(r["n"] for r in transactions) == [50, 100, 100]  # one transaction per batch
        ledger.add(rec(250))
        ledger.stop()  # and at shutdown: stop, the writer's last flush, nothing left behind
        await writer
        await ledger.flush()
        assert (await table(database))[0] == 251 and ledger.backlog() == (0, 0)


@pytest.mark.anyio
async def test_unreachable_postgres_journals_then_replays_nothing_lost_or_doubled(
        database_url: str, pg_schema: str, tmp_path: Path) -> None:
    journal_path = tmp_path / "journal" / "ledger.jsonl"
    metrics = Metrics()
    down = Database(DOWN_URL, pg_schema, timeout_s=1)
    outage = PostgresLedger(down, LedgerConfig(max_queued=50), LedgerJournal(journal_path), metrics.ledger_backlog)
    writer = asyncio.get_running_loop().create_task(outage.run())
    records = [rec(i, NOW - timedelta(seconds=i)) for i in range(120)]
    for record in records:
        outage.add(record)  # beyond 50 queued: straight to the journal
    assert outage.backlog() == (50, 70)
    await outage.flush()  # PostgreSQL down: the queue goes to the journal too
    assert outage.backlog() == (0, 120) and len(outage.journal.pending()) == 120
    text = metrics.render().decode()
    assert 'gateway_ledger_backlog_records{place="journal"} 120.0' in text
    assert 'gateway_ledger_backlog_records{place="queue"} 0.0' in text
    outage.add(rec(120))
    outage.stop()
    await writer
    await outage.flush()
    assert outage.backlog() == (0, 121)  # shutdown during the outage: everything is in the journal
    await down.close()

    pending = outage.journal.pending()
    assert sorted(r.request_id for _, r in pending) == sorted(f"req-{i}" for i in range(121))
    async with migrated(database_url, pg_schema) as database:
        # A replay cut off half-way: the first 60 journaled records are in PostgreSQL already.
        partial = ledger_on(database, tmp_path / "partial.jsonl")
        partial.journal.append(pending[:60])
        assert await partial.replay() == 60
        back = ledger_on(database, journal_path)
        writer = asyncio.get_running_loop().create_task(back.run())  # replays on its first round
        for _ in range(500):
            if back.backlog() == (0, 0) and (await table(database))[0] == 121:
                break
            await asyncio.sleep(0.01)
        back.stop()
        await writer
        expected = sum(r.cost_pico for r in records) + 20_000_120
        assert await table(database) == (121, 121, expected)
        assert back.journal.pending() == [] and not list(journal_path.parent.glob("*.replay"))
        got = await collect(back, NOW - timedelta(days=1), NOW + timedelta(days=1))
        assert sorted(got, key=lambda r: r.request_id) == sorted([*records, rec(120)], key=lambda r: r.request_id)


@pytest.mark.anyio
async def test_a_record_postgres_refuses_is_set_aside_and_the_rest_written(
        database_url: str, pg_schema: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async with migrated(database_url, pg_schema) as database:
        ledger = ledger_on(database, tmp_path / "ledger.jsonl")
        ledger.add(rec(0, key_alias="nul\x00 and \ud800 lone surrogate"))  # cleaned, not refused
        ledger.add(rec(1, cost_pico=2**63))  # beyond bigint: refused
        ledger.add(rec(2))
        await ledger.flush()
        got = await collect(ledger, NOW - timedelta(days=1), NOW + timedelta(days=1))
        assert sorted(r.request_id for r in got) == ["req-0", "req-2"]
        assert next(r.key_alias for r in got if r.request_id == "req-0") == "nul\ufffd and ? lone surrogate"
        rejected = LedgerJournal(tmp_path / "ledger.jsonl.rejected").pending()
        assert [r for _, r in rejected] == [rec(1, cost_pico=2**63)] and ledger.backlog() == (0, 0)
        assert "PostgreSQL refused the record of request req-1" in caplog.text
        # A torn last line in the journal (a crash mid-write) is skipped; the rest is replayed.
        ledger.journal.append([(record_id(), rec(3))])
        with open(ledger.journal.path, "ab") as f:
            f.write(b'{"id": "0190')
        assert await ledger.replay() == 1 and (await table(database))[0] == 3
        assert "unreadable, skipped" in caplog.text


@pytest.mark.anyio
async def test_rows_past_the_retention_are_deleted(database_url: str, pg_schema: str, tmp_path: Path) -> None:
    assert LedgerConfig().kept_days(True) == 400 and LedgerConfig().kept_days(False) == 35
    async with migrated(database_url, pg_schema) as database:
        ledger = ledger_on(database, tmp_path / "ledger.jsonl", retention_days=30)
        for i, age in enumerate((45, 31, 29, 1, 0)):
            ledger.add(rec(i, NOW - timedelta(days=age)))
        ledger.add(rec(9, NOW - timedelta(days=30, seconds=1)))
        await ledger.flush()
        assert await ledger.expire() == 3 and await ledger.expire() == 0
        got = await collect(ledger, NOW - timedelta(days=100), NOW + timedelta(days=1))
        assert [r.request_id for r in got] == ["req-2", "req-3", "req-4"]


@pytest.mark.anyio
async def test_pages_are_in_time_order_and_honour_the_range(
        database_url: str, pg_schema: str, tmp_path: Path) -> None:
    async with migrated(database_url, pg_schema) as database:
        ledger = ledger_on(database, tmp_path / "ledger.jsonl", batch_records=500)
        start = NOW - timedelta(days=2)
        times = [start + timedelta(seconds=37 * i) for i in range(2 * PAGE + 300)]
        same = [start + timedelta(hours=5)] * 50  # ties: still each exactly once
        shuffled = list(enumerate([*times, *same]))
        random.Random(7).shuffle(shuffled)
        for i, at in shuffled:
            ledger.add(rec(i, at))
        ledger.add(rec(-1, start - timedelta(microseconds=1)))  # just before the range
        ledger.add(rec(-2, times[-1]))  # at the range's end: excluded
        await ledger.flush()
        pages = [page async for page in ledger.pages(start, times[-1])]
        assert [len(p) for p in pages] == [PAGE, PAGE, 300 - 1 + 50]
        got = [r for page in pages for r in page]
        assert [r.time for r in got] == sorted(iso(t) for t in [*times[:-1], *same])
        assert len({r.request_id for r in got}) == len(got)
        assert {"req--1", "req--2"}.isdisjoint(r.request_id for r in got)
        assert got[0] == rec(0, start)  # every field back as it went in
        assert [page async for page in ledger.pages(NOW + timedelta(days=1), NOW + timedelta(days=2))] == []


def mixed_records() -> list[LedgerRecord]:
    """Three days, two models, keys, teams and tiers (and none), a cache hit at $0, savings."""
    out = []
    for i in range(60):
        day = NOW - timedelta(days=i % 3, minutes=i)
        out.append(rec(i, day, model=("m-a", "m-b")[i % 2], key_id=("", "k1", "k2")[i % 3],
                       team=("", "research", "ops", "research")[i % 4], tier=("", "economy")[i % 5 == 0],
                       cost_pico=1_000_000_007 * (i + 1), routing_saved_pico=i * 3))
    out.append(rec(60, NOW, model="m-c", cache="hit", cost_pico=0, cache_saved_pico=12_345))
    return out


@pytest.mark.anyio
async def test_the_sql_aggregates_equal_the_ledger_to_the_pico_dollar(
        database_url: str, pg_schema: str, tmp_path: Path) -> None:
    async with migrated(database_url, pg_schema) as database:
        ledger = ledger_on(database, tmp_path / "ledger.jsonl")
        stats = PostgresSpendStats(ledger)
        records = mixed_records()
        for record in records:
            ledger.add(record)  # not flushed: reading the aggregates writes this process's queue first
        first, last = (NOW - timedelta(days=3)).date(), NOW.date()
        start, end = datetime.combine(first, datetime.min.time(), UTC), NOW + timedelta(days=1)
        days = await stats.days(first, last)
        assert ledger.backlog() == (0, 0)
        for group_by in GROUPS:
            assert aggregate(days, group_by) == await spend_by(ledger, start, end, group_by), group_by
        assert sum(d["total"] for d in days.values()) == sum(r.cost_pico for r in records)
        assert aggregate(days, "model")["m-c"] == 0  # a model with only cache hits: there, at $0
        assert await stats.summary(start, end) == await summarise(ledger, start, end)
        summary = await stats.summary(start, end)
        assert (summary.requests, summary.cache_hits, summary.cache_saved) == (61, 1, 12_345)
        assert await stats.days(date(2001, 1, 1), date(2001, 1, 2)) == {}
        empty = await stats.summary(datetime(2001, 1, 1, tzinfo=UTC), datetime(2001, 1, 2, tzinfo=UTC))
        assert (empty.requests, empty.spend, dict(empty.by_model)) == (0, 0, {})


def pg_config(upstream: FakeUpstreamThread, database_url: str, schema: str, journal: Path) -> dict[str, Any]:
    return {
        "models": [model("pg-a", "openai", upstream, upstream_model="pg-a-up",
                         pricing={"input_per_mtok": 1.1, "output_per_mtok": 4.4}),
                   model("pg-b", "openai", upstream, upstream_model="pg-b-up",
                         pricing={"input_per_mtok": 3, "output_per_mtok": 15, "cached_input_per_mtok": 0.3})],
        "master_key": MASTER, "cache": {"response": {"enabled": False}},
        "database_url": database_url, "database": {"schema_name": schema, "migrate_on_start": True, "timeout_s": 2},
        "ledger": {"journal_path": str(journal)},
    }


async def admin(gw: InProcess, path: str, **params: str) -> Any:
    response = await gw.client.get(path, params=params, headers={"Authorization": f"Bearer {MASTER}"})
    assert response.status_code == 200, response.text
    return response


@pytest.mark.anyio
async def test_through_the_gateway_usage_cost_equals_the_ledger_and_the_metric(
        in_process: Any, upstream: FakeUpstreamThread, database_url: str, pg_schema: str, tmp_path: Path) -> None:
    upstream.script("pg-a-up", {"usage": {"prompt_tokens": 1234, "completion_tokens": 567, "total_tokens": 1801}})
    upstream.script("pg-b-up", {"usage": {"prompt_tokens": 2000, "completion_tokens": 333, "total_tokens": 2333,
                                          "prompt_tokens_details": {"cached_tokens": 1024}}})
    n, costs = 12, []
    async with in_process(pg_config(upstream, database_url, pg_schema, tmp_path / "ledger.jsonl")) as gw:
        client = gw.openai()
        for i in range(n):
            raw = await client.chat.completions.with_raw_response.create(
                model=("pg-a", "pg-b")[i % 2], messages=[{"role": "user", "content": f"question {i}"}])
            usage_cost = Decimal(repr(raw.parse().usage.model_dump()["cost"]))
            assert usage_cost == Decimal(raw.headers["x-gateway-cost-usd"])
            costs.append(int(usage_cost * 10**12))
        await gw.drain()
        lines = (await admin(gw, "/admin/ledger", format="jsonl")).text.splitlines()
        records = [orjson.loads(line) for line in lines]
        assert len(records) == n and sum(r["cost_pico"] for r in records) == sum(costs) > 0
        assert sorted(r["cost_pico"] for r in records) == sorted(costs)
        samples = [line.rpartition(" ")[2] for line in gw.state.metrics.render().decode().splitlines()
                   if line.startswith("gateway_spend_usd_total{")]
        assert len(samples) == 2 and sum(map(Decimal, samples)) * 10**12 == sum(costs)  # one series per model
        for source in ("stats", "ledger"):
            spend = (await admin(gw, "/admin/spend", group_by="day", source=source)).json()
            assert round(spend["total_usd"] * 10**12) == sum(costs)
        ready = (await gw.client.get("/readyz")).json()
        assert ready["status"] == "ready" and "warnings" not in ready
        database = gw.state.database
        assert database is not None and await table(database) == (n, n, sum(costs))
    async with migrated(database_url, pg_schema) as database:  # the shutdown flush wrote nothing twice
        assert await table(database) == (n, n, sum(costs))


@pytest.mark.anyio
async def test_with_postgres_down_requests_are_served_and_readyz_says_the_ledger_is_behind(
        in_process: Any, upstream: FakeUpstreamThread, database_url: str, pg_schema: str, tmp_path: Path) -> None:
    journal = tmp_path / "ledger.jsonl"
    config = pg_config(upstream, DOWN_URL, pg_schema, journal)
    config["database"] = {"schema_name": pg_schema, "timeout_s": 1}
    async with in_process(config) as gw:
        client = gw.openai()
        for i in range(3):
            answer = await client.chat.completions.create(model="pg-a", messages=[{"role": "user", "content": f"{i}"}])
            assert answer.choices[0].message.content
        await gw.state.ledger.flush()
        assert gw.state.ledger.backlog() == (0, 3)
        ready = await gw.client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["warnings"] == ["ledger: behind (0 record(s) queued, 3 in the local journal)"]
        assert gw.metric("gateway_ledger_backlog_records", place="journal") == 3
    async with migrated(database_url, pg_schema) as database:  # back: replayed, once
        ledger = ledger_on(database, journal)
        assert await ledger.replay() == 3 and await ledger.replay() == 0
        assert (await table(database))[:2] == (3, 3)
