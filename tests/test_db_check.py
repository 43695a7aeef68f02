"""`gateway db check`: Redis' live budget counters, PostgreSQL's settled spend and the ledger
reconciled to the pico-dollar, against the machine's PostgreSQL (a schema of each test's own)
and the session's Redis (a key prefix of each test's own). The spend comes from real requests
through the gateway (in process); then a figure is changed behind its back."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis
import redis.asyncio
import yaml
from conftest import ROOT, InProcess, free_port, metric_value, model

from gateway.access.budgets_pg import RecordedBudgets
from gateway.access.journal import SpendJournal
from gateway.access.periods import PERIODS, period_of
from gateway.access.spend_pg import SpendRecord
from gateway.access.spend_writer import _KEEP_SETTLEMENTS
from gateway.cli.main import main
from gateway.database.pool import Database
from gateway.database.reconcile import KEEP_SETTLEMENT_ROWS, Reconciler
from gateway.database.reconcile_read import Target, counter_key, period_start
from gateway.fake_upstream import FakeUpstreamThread
from gateway.money.pricing import usd_text as usd
from gateway.observability.metrics import Metrics

MASTER = "master-test-key-check-123456"
USAGE = {"prompt_tokens": 8, "completion_tokens": 20, "total_tokens": 28}
COST = 8 * 1_234_567 + 20 * 3_333_333  # pico per request: 8 in at $1.234567/M, 20 out at $3.333333/M
RESET = "reset: deleted from Redis, rebuilt from PostgreSQL's settled spend on its next use"
FROM_LEDGER = "set from the ledger (its settlement rows agree), its Redis counter reset"
InProcessFactory = Callable[[dict[str, Any]], AbstractAsyncContextManager[InProcess]]


@dataclass(frozen=True)
class World:
    """Key `a` (team 'ml', $1 a month; the team $5 a week) made 3 requests, key `b` (no budget,
    team 'ops' without a record) 2; all settled and in the ledger, the gateway stopped."""

    config: Path  # the command's config file
    redis_url: str
    prefix: str
    schema: str
    url: str
    a: str
    b: str

    def counter(self, scope: str, period: str) -> str:
        now = datetime.now(UTC)
        return counter_key(self.prefix, Target(scope, period_of(period, now)[0], None, None, None))

    def check(self, *args: str) -> int:
        return main(["db", "check", "--config", str(self.config), "--in-flight-s", "0", *args])


def sql(url: str, schema: str, query: str, *args: Any) -> list[Any]:
    async def run() -> list[Any]:
        conn = await asyncpg.connect(url, server_settings={"search_path": schema})
        try:
            return list(await conn.fetch(query, *args))
        finally:
            await conn.close()

    return asyncio.run(run())


async def _new_key(gw: InProcess, **fields: Any) -> tuple[str, str]:
    resp = await gw.client.post("/admin/keys", json=fields, headers={"Authorization": f"Bearer {MASTER}"})
    assert resp.status_code == 201, resp.text
    return str(resp.json()["id"]), str(resp.json()["key"])


async def _ask(gw: InProcess, secret: str) -> None:
    resp = await gw.client.post("/v1/chat/completions", headers={"Authorization": f"Bearer {secret}"},
                                json={"model": "dc-a", "messages": [{"role": "user", "content": "hi"}],
                                      "max_tokens": 20})
    assert resp.status_code == 200, resp.text


def gateway_config(upstream: FakeUpstreamThread, redis_url: str, database_url: str, schema: str, prefix: str,
                   tmp_path: Path) -> dict[str, Any]:
    return {
        "models": [model("dc-a", "openai", upstream, upstream_model="dc-a-up",
                         pricing={"input_per_mtok": 1.234567, "output_per_mtok": 3.333333})],
        "master_key": MASTER, "require_keys": True, "redis_url": redis_url, "redis_prefix": prefix,
        "database_url": database_url, "database": {"schema_name": schema, "migrate_on_start": True},
        "budgets": {"key_cache_ttl_s": 0, "journal_path": str(tmp_path / "spend.jsonl")},
        "ledger": {"journal_path": str(tmp_path / "ledger.jsonl")}, "cache": {"response": {"enabled": False}},
    }


@pytest.fixture
def world(in_process: InProcessFactory, upstream: FakeUpstreamThread, database_url: str, pg_schema: str,
          redis_url: str, tmp_path: Path) -> World:
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    config = gateway_config(upstream, redis_url, database_url, pg_schema, prefix, tmp_path)
    upstream.script("dc-a-up", {"usage": USAGE})

    async def run() -> tuple[str, str]:
        async with in_process(config) as gw:
            put = await gw.client.put("/admin/teams/ml", json={"budget_usd": "5", "budget_period": "weekly"},
                                      headers={"Authorization": f"Bearer {MASTER}"})
            assert put.status_code == 200, put.text
            a, a_secret = await _new_key(gw, alias="a", team="ml", budget_usd="1", budget_period="monthly")
            b, b_secret = await _new_key(gw, alias="b", team="ops")
            for secret in (a_secret, a_secret, a_secret, b_secret, b_secret):
                await _ask(gw, secret)
            return a, b  # stopping the gateway writes every settlement and ledger record

    a, b = asyncio.run(run())
    path = tmp_path / "check.yaml"
    path.write_text(yaml.safe_dump({
        "redis_url": redis_url, "redis_prefix": prefix, "database_url": database_url,
        "database": {"schema_name": pg_schema},
        "models": [{"name": "m", "provider": "openai", "api_key": "k", "pricing": {"input_per_mtok": 1,
                                                                                 "output_per_mtok": 1}}]}))
    return World(path, redis_url, prefix, pg_schema, database_url, a, b)


@pytest.fixture
def live(world: World) -> Iterator[redis.Redis]:
    """The gateway's Redis, to change its counters behind its back."""
    client = redis.Redis.from_url(world.redis_url)
    yield client
    client.close()


def test_a_consistent_state_reports_nothing(world: World, live: redis.Redis,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    spent = live.hget(world.counter(f"key:{world.a}", "monthly"), "spent")
    assert spent == str(3 * COST).encode()  # the live counter is there: Redis is compared too
    done = subprocess.run([sys.executable, "-m", "gateway", "db", "check", "--config", str(world.config)],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout == "checked 2 key and 2 team counter(s) in Redis, PostgreSQL and the ledger: no difference\n"
    assert world.check("--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert report == {"checked": {"keys": 2, "teams": 2, "redis": True, "ledger": True}, "differences": [],
                      "repaired": 0, "drift_usd": {"redis_counter": {"key": "0", "team": "0"},
                                    "settled_spend": {"key": "0", "team": "0"}}}
    assert world.check("--repair") == 0  # nothing to do, nothing done
    assert capsys.readouterr().out.endswith(": no difference\n")


def test_a_redis_counter_changed_behind_the_gateways_back_is_reported_and_repaired(
        world: World, live: redis.Redis, in_process: InProcessFactory, upstream: FakeUpstreamThread, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    counter = world.counter(f"key:{world.a}", "monthly")
    live.hincrby(counter, "spent", 123_456_789)
    period = period_of("monthly", datetime.now(UTC))[0]

    assert world.check() == 1
    assert capsys.readouterr().out.splitlines() == [
        f"redis_counter key:{world.a} {period}: redis ${usd(3 * COST + 123_456_789)}, postgresql ${usd(3 * COST)}: "
        f"+$0.000123456789 (+123456789 pico); --repair: {RESET}",
        "checked 2 key and 2 team counter(s) in Redis, PostgreSQL and the ledger: 1 difference(s)"]
    assert world.check("--json") == 1
    report = json.loads(capsys.readouterr().out)
    assert report["drift_usd"] == {"redis_counter": {"key": "0.000123456789", "team": "0"},
                                   "settled_spend": {"key": "0", "team": "0"}}
    assert report["differences"] == [{
        "what": "redis_counter", "scope": f"key:{world.a}", "period": period, "reference": "postgresql",
        "expected_pico": 3 * COST, "found_in": "redis", "found_pico": 3 * COST + 123_456_789,
        "difference_pico": 123_456_789, "difference_usd": "0.000123456789", "repairable": True, "repaired": False,
        "action": RESET}]

    assert world.check("--repair", "--json") == 1
    assert json.loads(capsys.readouterr().out)["differences"][0]["repaired"] is True
    assert not live.exists(counter)
    assert world.check() == 0
    capsys.readouterr()

    async def afterwards() -> None:  # the gateway rebuilds it from PostgreSQL, and carries on from there
        config = gateway_config(upstream, world.redis_url, world.url, world.schema, world.prefix, tmp_path)
        async with in_process(config) as gw:
            key = await gw.state.access.keys.get(world.a)
            assert (await gw.state.access.budgets.spend(key)).spent == 3 * COST

    asyncio.run(afterwards())
    assert live.hget(counter, "spent") == str(3 * COST).encode()
    assert world.check() == 0


def test_an_altered_settled_spend_row_is_reported_and_set_from_the_ledger(world: World,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    week = period_of("weekly", datetime.now(UTC))[0]
    month = period_of("monthly", datetime.now(UTC))[0]
    [before] = sql(world.url, world.schema, "SELECT version FROM key_spend WHERE key_id = $1", world.a)
    sql(world.url, world.schema, "UPDATE key_spend SET spent_pico = spent_pico - 1000 WHERE key_id = $1", world.a)
    sql(world.url, world.schema, "DELETE FROM team_spend WHERE team = 'ml'")  # the total only: its items stay

    assert world.check() == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines == [  # Redis still has the right figures: they differ from the altered record too
        f"redis_counter key:{world.a} {month}: redis ${usd(3 * COST)}, postgresql ${usd(3 * COST - 1000)}: "
        f"+$0.000000001 (+1000 pico); --repair: {RESET}",
        f"settled_spend key:{world.a} {month}: postgresql ${usd(3 * COST - 1000)}, ledger ${usd(3 * COST)}: "
        f"-$0.000000001 (-1000 pico); --repair: {FROM_LEDGER}",
        f"redis_counter team:ml {week}: redis ${usd(3 * COST)}, postgresql $0: +${usd(3 * COST)} (+{3 * COST} pico); "
        f"--repair: {RESET}",
        f"settled_spend team:ml {week}: postgresql $0, ledger ${usd(3 * COST)}: -${usd(3 * COST)} (-{3 * COST} pico); "
        f"--repair: {FROM_LEDGER}",
        "checked 2 key and 2 team counter(s) in Redis, PostgreSQL and the ledger: 4 difference(s)"]

    assert world.check("--repair") == 1
    assert sum("repaired: " in line for line in capsys.readouterr().out.splitlines()) == 4
    rows = sql(world.url, world.schema, "SELECT spent_pico, version FROM key_spend WHERE key_id = $1", world.a)
    assert [tuple(r) for r in rows] == [(3 * COST, before["version"] + 1)]
    [team] = sql(world.url, world.schema, "SELECT spent_pico, version FROM team_spend WHERE team = 'ml'")
    [last] = sql(world.url, world.schema, "SELECT max(team_version) AS v FROM spend_settlements WHERE team = 'ml'")
    assert tuple(team) == (3 * COST, last["v"] + 1)
    assert world.check() == 0


def test_settled_spend_its_settlement_rows_back_against_the_ledger_is_reported_not_repaired(
        world: World, capsys: pytest.CaptureFixture[str]) -> None:
    # A ledger record that never arrived (as if still in some replica's journal): the total and its
    # settlement rows agree with each other, not with the ledger; nothing says which is right.
    sql(world.url, world.schema, "DELETE FROM ledger WHERE record_id = (SELECT record_id FROM ledger "
        "WHERE key_id = $1 LIMIT 1)", world.b)
    assert world.check("--repair", "--json") == 1
    report = json.loads(capsys.readouterr().out)
    found = {(d["scope"], d["what"]): d for d in report["differences"]}
    assert set(found) == {(f"key:{world.b}", "settled_spend"), ("team:ops", "settled_spend")}
    for d in found.values():
        assert (d["difference_pico"], d["repairable"], d["repaired"]) == (COST, False, False)
        assert d["action"].startswith(f"not repaired: its settlement rows sum to {2 * COST} pico, not the ledger's")
    assert report["repaired"] == 0
    rows = sql(world.url, world.schema, "SELECT spent_pico FROM key_spend WHERE key_id = $1", world.b)
    assert [r["spent_pico"] for r in rows] == [2 * COST]
    assert world.check() == 1  # still there: nothing was changed


def test_the_drift_gauge_and_the_recheck(world: World, live: redis.Redis) -> None:
    counter = world.counter("team:ml", "weekly")

    async def run() -> None:
        database, client = Database(world.url, world.schema), redis.asyncio.Redis.from_url(world.redis_url)
        try:
            reconciler = Reconciler(database, client, world.prefix, period_of, in_flight_s=0.6)
            metrics = Metrics()
            live.hincrby(counter, "spent", -5)
            await reconciler.refresh(metrics.spend_drift)
            text = metrics.render().decode()
            assert metric_value(text, "gateway_spend_drift_usd", scope="team", check="redis_counter") == 5e-12
            assert metric_value(text, "gateway_spend_drift_usd", scope="key", check="redis_counter") == 0
            assert metric_value(text, "gateway_spend_drift_usd", scope="team", check="settled_spend") == 0
            # Gone by the second pass (as a settlement in flight would be): not reported.
            checking = asyncio.ensure_future(reconciler.check())
            await asyncio.sleep(0.3)
            live.hincrby(counter, "spent", 5)
            assert (await checking).differences == ()
            await reconciler.refresh(metrics.spend_drift)
            text = metrics.render().decode()
            assert metric_value(text, "gateway_spend_drift_usd", scope="team", check="redis_counter") == 0
        finally:
            await database.close()
            await client.aclose()

    asyncio.run(run())


def test_the_app_task_refreshes_the_gauge_and_skips_a_round_when_postgresql_is_down(
        world: World, live: redis.Redis, caplog: pytest.LogCaptureFixture) -> None:
    live.hincrby(world.counter(f"key:{world.b}", "total"), "spent", 7)

    async def run() -> None:
        client = redis.asyncio.Redis.from_url(world.redis_url)
        up, down = Database(world.url, world.schema), Database(f"postgresql://postgres@127.0.0.1:{free_port()}/x")
        metrics = Metrics()
        try:
            reconciler = Reconciler(up, client, world.prefix, period_of, ledger=False, in_flight_s=0)  # as the app's
            task = asyncio.ensure_future(reconciler.refresh_forever(metrics.spend_drift, interval_s=0.01))
            failing = asyncio.ensure_future(Reconciler(down, None, "x", period_of)
                                            .refresh_forever(Metrics().spend_drift, interval_s=0.01))
            for _ in range(500):
                text = metrics.render().decode()
                if "gateway_spend_drift_usd{" in text and "spend reconciliation skipped" in caplog.text:
                    break
                await asyncio.sleep(0.01)
            assert not failing.done() and not task.done()  # neither gives up
            for chore in (task, failing):
                chore.cancel()
            await asyncio.gather(task, failing, return_exceptions=True)
            assert metric_value(text, "gateway_spend_drift_usd", scope="key", check="redis_counter") == 7e-12
            assert 'check="settled_spend"' not in text  # the ledger is `gateway db check`'s
        finally:
            await asyncio.gather(up.close(), down.close(), client.aclose())

    with caplog.at_level("WARNING", logger="gateway.reconcile"):
        asyncio.run(run())
    assert "spend reconciliation: 1 difference(s); run `gateway db check`" in caplog.text
    assert "spend reconciliation skipped" in caplog.text


def test_a_busy_gateway_shows_no_difference(in_process: InProcessFactory, upstream: FakeUpstreamThread,
                                           database_url: str, pg_schema: str, redis_url: str, tmp_path: Path) -> None:
    """Settlements counted in Redis and not yet committed, batches committed and not yet confirmed,
    ledger records not yet written: none of it is taken for drift."""
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    upstream.script("dc-a-up", {"usage": USAGE})

    async def run() -> None:
        async with in_process(gateway_config(upstream, redis_url, database_url, pg_schema, prefix, tmp_path)) as gw:
            _, a = await _new_key(gw, team="ml", budget_usd="1", budget_period="daily")
            _, b = await _new_key(gw, team="ml")
            await asyncio.gather(_ask(gw, a), _ask(gw, b))
            await gw.drain()
            budgets = gw.state.access.budgets
            assert isinstance(budgets, RecordedBudgets)
            await budgets.flush()  # both keys and the team have settled spend: each counter is checked
            busy = True

            async def load(secret: str) -> int:
                done = 0
                while busy:
                    await _ask(gw, secret)
                    done += 1
                return done

            loads = [asyncio.ensure_future(load(s)) for s in (a, a, b, b)]
            reconciler = Reconciler(gw.state.database, gw.state.redis, prefix, period_of, in_flight_s=1.0)
            reports = [await reconciler.check() for _ in range(8)]
            busy = False
            assert sum(await asyncio.gather(*loads)) > 20
            assert [(r.keys, r.teams, r.differences) for r in reports] == [(2, 1, ())] * 8

    asyncio.run(run())


def test_without_a_database_or_its_tables_it_cannot_check(database_url: str, pg_schema: str, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "gateway.yaml"
    models = [{"name": "m", "provider": "openai", "api_key": "k", "pricing": {"input_per_mtok": 1,
                                                                              "output_per_mtok": 1}}]
    config.write_text(yaml.safe_dump({"models": models}))
    assert main(["db", "check", "--config", str(config)]) == 2
    assert "no database_url in the config: nothing to check" in capsys.readouterr().err
    config.write_text(yaml.safe_dump({"models": models, "database_url": database_url,
                                      "database": {"schema_name": pg_schema}}))
    assert main(["db", "check", "--config", str(config)]) == 2
    assert f"schema '{pg_schema}' lacks the gateway's tables: run `gateway db upgrade`" in capsys.readouterr().err


def test_what_this_layer_repeats_of_the_budgets_layer_matches_it(tmp_path: Path) -> None:
    """Period ids, the counters' Redis keys and the settlement rows' lifetime: the database layer
    sits below gateway.access, so it has its own copy of each."""
    start = datetime(2023, 12, 25, 13, 5, tzinfo=UTC)
    for hours in range(0, 24 * 800, 7):
        at = start + timedelta(hours=hours)
        for period in PERIODS:
            name, end = period_of(period, at)
            begins = period_start(name)
            assert (begins is None) == (end is None) == (period == "total")
            if begins is not None and end is not None:
                assert begins <= at < end and period_of(period, begins)[0] == name
                assert period_of(period, begins - timedelta(microseconds=1))[0] != name
    assert KEEP_SETTLEMENT_ROWS == _KEEP_SETTLEMENTS
    budgets = RecordedBudgets(redis.asyncio.Redis(), SpendRecord(Database("postgresql://unused")),
                              SpendJournal(tmp_path / "journal.jsonl"), "p")
    target = Target("team:ml", period_of("weekly", start)[0], None, None, None)
    assert budgets._keys("team:ml", "weekly", start)[2] == counter_key("p", target)
