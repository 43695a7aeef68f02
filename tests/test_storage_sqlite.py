"""The embedded default: without `database_url` and `redis_url`, a SQLite file keeps keys, teams,
settled spend per key/team/period, budget holds and the ledger, so a gateway stopped and started
again on the same file knows its keys, its spend to the pico-dollar and its ledger, and still
refuses past a budget; the processes of `--workers N` share the file (and every budget). The
default file follows XDG_DATA_HOME; `memory` stays selectable (and is the test session's default)."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from conftest import Gateway, InProcess, model

from gateway.access.budgets import new_hold
from gateway.access.budgets_sqlite import SqliteBudgets
from gateway.access.journal import SpendJournal
from gateway.access.keys import MemoryKeyStore, VirtualKey
from gateway.config.schema import ConfigError, parse_config
from gateway.config.settings import resolve_settings
from gateway.config.storage import default_sqlite_path
from gateway.database.sqlite import Sqlite
from gateway.errors import BudgetExceeded
from gateway.fake_upstream import FakeUpstreamThread
from gateway.ledger.journal import LedgerJournal
from gateway.ledger.store import LedgerConfig, LedgerRecord, MemoryLedger, iso
from gateway.ledger.store_sqlite import SqliteLedger

MASTER = "master-test-key-sqlite-123456"
PICO = 10**12
ADMIN = {"Authorization": f"Bearer {MASTER}"}
HI: Any = [{"role": "user", "content": "hi"}]
USAGE = {"prompt_tokens": 8, "completion_tokens": 20, "total_tokens": 28}
# 8 input tokens at $1.234567/M and 20 output at $3.333333/M: 9,876,536 + 66,666,660 pico a request.
COST_PICO = 8 * 1_234_567 + 20 * 3_333_333

InProcessFactory = Callable[[dict[str, Any]], AbstractAsyncContextManager[InProcess]]


@pytest.fixture(autouse=True)
def _no_redis_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)  # (CI may set it: these gateways have neither store)


def sqlite_config(upstream: FakeUpstreamThread, path: Path, **extra: Any) -> dict[str, Any]:
    return {
        "models": [model("lite-a", "openai", upstream, upstream_model="lite-a-up",
                         pricing={"input_per_mtok": 1.234567, "output_per_mtok": 3.333333})],
        "master_key": MASTER, "require_keys": True,
        "storage": {"backend": "sqlite", "sqlite_path": str(path)},
        "budgets": {"key_cache_ttl_s": 0},
        "cache": {"response": {"enabled": False}},
        **extra,
    }


async def ask(client: httpx.AsyncClient, secret: str) -> httpx.Response:
    return await client.post("/v1/chat/completions", headers={"Authorization": f"Bearer {secret}"},
                             json={"model": "lite-a", "messages": HI, "max_tokens": 20})


async def ledger_rows(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    resp = await client.get("/admin/ledger?format=jsonl", headers=ADMIN)
    assert resp.status_code == 200, resp.text
    return [orjson.loads(line) for line in resp.content.splitlines()]


async def _first_run(gw: InProcess, budget: Decimal) -> dict[str, Any]:
    """Keys and a team created, two requests billed; what the second run must find again."""
    client = gw.client
    team = await client.put("/admin/teams/ml", json={"budget_usd": "5", "budget_period": "monthly"}, headers=ADMIN)
    assert team.status_code == 200, team.text
    made = await client.post("/admin/keys", json={"alias": "kept", "team": "ml", "budget_usd": str(budget)},
                             headers=ADMIN)
    gone = await client.post("/admin/keys", json={"alias": "gone"}, headers=ADMIN)
    assert made.status_code == gone.status_code == 201
    assert (await client.delete(f"/admin/keys/{gone.json()['id']}", headers=ADMIN)).status_code == 200
    answers = [await ask(client, made.json()["key"]) for _ in range(2)]
    assert [a.status_code for a in answers] == [200, 200]
    assert sum(Decimal(a.headers["x-gateway-cost-usd"]) for a in answers) * PICO == 2 * COST_PICO
    await gw.drain()
    key = await gw.state.access.keys.get(made.json()["id"])
    assert key is not None and (await gw.state.access.budgets.spend(key)).spent == 2 * COST_PICO
    return {"key": made.json(), "gone": gone.json()["key"], "ledger": await ledger_rows(client)}


async def _second_run(gw: InProcess, first: dict[str, Any]) -> None:
    client, secret, key_id = gw.client, first["key"]["key"], first["key"]["id"]
    key = await gw.state.access.keys.authenticate(secret)  # the key authenticates: same id, same fields
    assert isinstance(key, VirtualKey) and key.id == key_id and key.alias == "kept" and key.team == "ml"
    assert (await gw.state.access.budgets.spend(key)).spent == 2 * COST_PICO  # to the pico-dollar
    team = await gw.state.access.keys.get_team("ml")
    assert team is not None and team.budget_pico == 5 * PICO and team.budget_period == "monthly"
    assert (await gw.state.access.budgets.team_spend(team)).spent == 2 * COST_PICO
    assert await ledger_rows(client) == first["ledger"]  # the ledger keeps its rows
    assert len(first["ledger"]) == 2 and sum(r["cost_pico"] for r in first["ledger"]) == 2 * COST_PICO
    assert (await ask(client, first["gone"])).status_code == 401  # revoked stays revoked
    assert (await ask(client, secret)).status_code == 200  # a third request fits the budget
    refused = await ask(client, secret)  # a fourth does not: budgets still refuse past the budget
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "budget_exceeded"
    await gw.drain()
    spend = (await client.get("/v1/spend", headers={"Authorization": f"Bearer {secret}"})).json()
    assert spend["spend_usd"] == pytest.approx(3 * COST_PICO / PICO, abs=1e-15) and spend["reserved_usd"] == 0
    by_key = (await client.get("/admin/spend?group_by=key", headers=ADMIN)).json()["data"]
    assert by_key == [{"group": key_id, "spend_usd": 3 * COST_PICO / PICO}]
    assert len(await ledger_rows(client)) == 3


def test_keys_spend_ledger_and_budgets_survive_a_restart(in_process: InProcessFactory, upstream: FakeUpstreamThread,
                                                        tmp_path: Path) -> None:
    upstream.script("lite-a-up", {"usage": USAGE})
    path = tmp_path / "data" / "gateway.sqlite3"  # its directory is created too
    # Three requests' cost and $0.00004 more: a fourth cannot even pay 16 output tokens.
    budget = Decimal(3 * COST_PICO + 40_000_000) / PICO

    async def scenario() -> None:
        async with in_process(sqlite_config(upstream, path)) as gw:
            assert gw.state.sqlite is not None and gw.state.sqlite.path == path
            first = await _first_run(gw, budget)
        assert path.is_file() and oct(path.stat().st_mode & 0o777) == "0o600"
        async with in_process(sqlite_config(upstream, path)) as gw:  # stopped, started again on the file
            await _second_run(gw, first)

    asyncio.run(scenario())


def test_workers_share_the_file_keys_and_one_budget(upstream: FakeUpstreamThread, tmp_path: Path) -> None:
    """`--workers 2` on one SQLite file: a key created through one worker authenticates on both,
    and the budget holds across both (each hold a BEGIN IMMEDIATE transaction on the file)."""
    upstream.script("lite-a-up", {"usage": USAGE, "latency_ms": 20})
    path = tmp_path / "shared.sqlite3"
    # (never capped: the fake upstream would answer a lowered max_tokens in full, past its hold)
    gw = Gateway(sqlite_config(upstream, path, budgets={"key_cache_ttl_s": 0, "min_capped_output_tokens": 20}),
                 workers=2)
    try:
        made = httpx.post(f"{gw.url}/admin/keys", json={"budget_usd": str(Decimal(10 * COST_PICO) / PICO)},
                          headers=ADMIN, timeout=10)
        assert made.status_code == 201, made.text
        secret = made.json()["key"]

        def one(_: int) -> int:  # new connections, so both workers take requests
            return httpx.post(f"{gw.url}/v1/chat/completions", json={"model": "lite-a", "messages": HI,
                                                                     "max_tokens": 20},
                              headers={"Authorization": f"Bearer {secret}", "connection": "close"}, timeout=30
                              ).status_code

        statuses: list[int] = []
        with ThreadPoolExecutor(8) as pool:
            while len(statuses) < 200 and (not statuses or len(_serving(gw)) < 2):
                statuses += pool.map(one, range(40))
        assert len(_serving(gw)) == 2  # both workers answered (a 429 too: the key authenticated there)
        assert set(statuses) <= {200, 429} and statuses.count(200) <= 10  # never past the budget
        assert statuses.count(200) >= 8  # (the first eight's worst cases fit together)
        deadline = time.monotonic() + 10  # settlements land just after their answers
        while _spent(path, made.json()["id"]) != statuses.count(200) * COST_PICO:
            assert time.monotonic() < deadline, _spent(path, made.json()["id"])
            time.sleep(0.02)
        assert _spent(path, made.json()["id"]) <= 10 * COST_PICO
    finally:
        gw.stop()


def _serving(gw: Gateway) -> set[str]:
    """The worker processes that have answered a request (each writes its own metrics file)."""
    return {f.stem.rsplit("_", 1)[-1] for f in (gw.dir / "metrics").glob("counter_*.db")}


def _spent(path: Path, key_id: str) -> int:
    conn = sqlite3.connect(path)
    try:
        row = conn.execute("SELECT spent_pico FROM key_spend WHERE key_id = ? AND period = 'total'",
                           (key_id,)).fetchone()
    finally:
        conn.close()
    return int(row[0]) if row is not None else 0


def test_concurrent_holds_on_one_file_never_pass_a_budget(tmp_path: Path) -> None:
    """Two stores on one file (two connections, as two processes have): every reservation checks and
    holds in one transaction, so together they admit exactly what the budget allows."""
    key = VirtualKey(id="key-shared", created_at=datetime.now(UTC), budget_pico=10 * 1000)

    async def scenario() -> None:
        stores = [Sqlite(tmp_path / "b.sqlite3"), Sqlite(tmp_path / "b.sqlite3")]
        budgets = [SqliteBudgets(s, SpendJournal(tmp_path / f"j{i}.jsonl")) for i, s in enumerate(stores)]
        outcomes = await asyncio.gather(*(budgets[i % 2].reserve(key, None, 1000, 60) for i in range(30)),
                                        return_exceptions=True)
        holds = [o for o in outcomes if not isinstance(o, BaseException)]
        assert len(holds) == 10 and all(isinstance(o, BudgetExceeded) for o in outcomes if o not in holds)
        for hold in holds:
            await budgets[0].settle(hold, 900)
        await budgets[1].settle(holds[0], 900)  # settled twice: counted once
        spend = await budgets[1].spend(key)
        assert (spend.spent, spend.reserved, spend.remaining) == (9000, 0, 1000)
        for store in stores:
            await store.close()

    asyncio.run(scenario())


def test_an_unavailable_file_journals_settlements_and_records_then_replays_them_once(tmp_path: Path) -> None:
    key = VirtualKey(id="key-j", created_at=datetime.now(UTC))
    record = LedgerRecord(iso(datetime.now(UTC)), "req-1", key.id, "", "", "m", "openai", "", 8, 0, 0, 20, 0, 1, 0, 0,
                          2, 0, 3, "miss", "", "200", 1.5)

    async def scenario() -> None:
        blocker = tmp_path / "not-a-dir"
        blocker.write_text("")
        broken = Sqlite(blocker / "x.sqlite3")  # its directory cannot be created
        budgets = SqliteBudgets(broken, SpendJournal(tmp_path / "spend.jsonl"))
        ledger = SqliteLedger(broken, LedgerConfig(), LedgerJournal(tmp_path / "ledger.jsonl"))
        await budgets.settle(new_hold(key, None, 0), 777)  # (no budget: the spend is still the key's)
        ledger.add(record)
        await ledger.flush()
        assert ledger.backlog() == (0, 1) and len(SpendJournal(tmp_path / "spend.jsonl").pending()) == 1
        await broken.close()
        good = Sqlite(tmp_path / "good.sqlite3")
        budgets = SqliteBudgets(good, SpendJournal(tmp_path / "spend.jsonl"))
        ledger = SqliteLedger(good, LedgerConfig(), LedgerJournal(tmp_path / "ledger.jsonl"))
        assert await budgets.replay() == 1 and await budgets.replay() == 0
        assert await ledger.replay() == 1
        assert (await budgets.spend(key)).spent == 777
        pages = [p async for p in ledger.pages(datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))]
        assert pages == [[record]]
        await good.close()

    asyncio.run(scenario())


def _settings(config: dict[str, Any]) -> Any:
    from gateway.money.price_table import load_price_table

    return resolve_settings(parse_config(config), load_price_table())


def test_the_default_file_follows_xdg_data_home(in_process: InProcessFactory, upstream: FakeUpstreamThread,
                                               tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GATEWAY_STORAGE")  # the default: auto
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    expected = tmp_path / "xdg" / "llm-gateway" / "gateway.sqlite3"
    config = {k: v for k, v in sqlite_config(upstream, tmp_path).items() if k != "storage"}
    assert default_sqlite_path() == expected and _settings(config).sqlite_path == str(expected)
    monkeypatch.setenv("XDG_DATA_HOME", "relative/dir")  # not absolute: ignored, as the XDG spec says
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_sqlite_path() == tmp_path / "home" / ".local" / "share" / "llm-gateway" / "gateway.sqlite3"
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))

    async def scenario() -> None:
        async with in_process(config) as gw:  # created with its directory at start-up
            assert gw.state.sqlite is not None and expected.is_file()
            made = await gw.client.post("/admin/keys", json={"alias": "x"}, headers=ADMIN)
            assert made.status_code == 201

    asyncio.run(scenario())
    conn = sqlite3.connect(expected)
    try:
        assert conn.execute("SELECT alias FROM virtual_keys").fetchall() == [("x",)]
    finally:
        conn.close()


def test_memory_is_still_selectable_and_the_test_sessions_default(
        in_process: InProcessFactory, upstream: FakeUpstreamThread, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    config = {k: v for k, v in sqlite_config(upstream, tmp_path / "unused.sqlite3").items() if k != "storage"}
    assert os.environ["GATEWAY_STORAGE"] == "memory" and _settings(config).sqlite_path is None
    monkeypatch.setenv("GATEWAY_STORAGE", "sqlite")
    assert _settings({**config, "storage": {"backend": "memory"}}).sqlite_path is None  # the config wins
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")  # an explicit backend: REDIS_URL is not used
    explicit = _settings({**config, "storage": {"backend": "memory"}})
    assert explicit.redis_url is None and explicit.sqlite_path is None
    assert _settings(config).redis_url == "redis://127.0.0.1:1/0" and _settings(config).sqlite_path is None
    monkeypatch.delenv("REDIS_URL")

    async def scenario() -> None:
        async with in_process({**config, "storage": {"backend": "memory"}}) as gw:
            assert gw.state.sqlite is None and isinstance(gw.state.access.keys, MemoryKeyStore)
            assert isinstance(gw.state.ledger, MemoryLedger)

    asyncio.run(scenario())
    assert not (tmp_path / "unused.sqlite3").exists()


@pytest.mark.parametrize(("storage", "extra", "problem"), [
    ({"backend": "sqlite"}, {"redis_url": "redis://127.0.0.1:6379/0"},
     "storage.backend: 'sqlite' cannot be used with redis_url"),
    ({"backend": "memory"}, {"database_url": "postgresql://gw@db/gw"},
     "storage.backend: 'memory' cannot be used with database_url"),
    ({"backend": "disk"}, {}, "storage.backend: must be one of 'auto', 'sqlite' or 'memory'"),
    ({"sqlite_path": "{tmp}"}, {}, "storage.sqlite_path: {tmp} is a directory; name a file"),
    ({"sqlite_path": "{tmp}/file/x.sqlite3"}, {}, "storage.sqlite_path: cannot create {tmp}/file/x.sqlite3: "
                                                  "{tmp}/file is not a directory"),
    ({"sqlite_timeout_s": 0}, {}, "storage.sqlite_timeout_s: must be > 0"),
])
def test_storage_config_errors_name_their_path(storage: dict[str, Any], extra: dict[str, Any], problem: str,
                                               upstream: FakeUpstreamThread, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_STORAGE", "auto")
    (tmp_path / "file").write_text("")
    filled = {k: v.replace("{tmp}", str(tmp_path)) if isinstance(v, str) else v for k, v in storage.items()}
    config = {**sqlite_config(upstream, tmp_path / "x.sqlite3"), "storage": filled, **extra}
    with pytest.raises(ConfigError) as caught:
        _settings(config)
    assert any(p.startswith(problem.replace("{tmp}", str(tmp_path))) for p in caught.value.problems), \
        caught.value.problems


def test_a_bad_gateway_storage_value_is_a_config_error(upstream: FakeUpstreamThread, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_STORAGE", "disk")
    config = {k: v for k, v in sqlite_config(upstream, tmp_path / "x.sqlite3").items() if k != "storage"}
    with pytest.raises(ConfigError) as caught:
        _settings(config)
    assert caught.value.problems == ["GATEWAY_STORAGE: must be one of 'auto', 'sqlite' or 'memory' (not 'disk')"]

