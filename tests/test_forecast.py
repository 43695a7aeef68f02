"""The spend forecast: the arithmetic (burn rate, projection, exhaustion) on exact integers; the
window summed from the ledger of every backend (memory, SQLite, Redis, PostgreSQL) through a real
gateway driven by the openai client, read back from `GET /admin/forecast`, the gauges on
/metrics and the dashboard; and the alert rule under promtool."""

from __future__ import annotations

import asyncio
import math
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import ROOT, InProcess, metric_value, model

from gateway.access.budgets import Spend
from gateway.access.forecast import Forecast, window_spend
from gateway.access.keys import Team
from gateway.api.dashboard import render
from gateway.config.schema import BudgetConfig, LedgerConfig
from gateway.fake_upstream import FakeUpstreamThread
from gateway.ledger.report import Summary
from gateway.ledger.store import LedgerRecord, MemoryLedger, iso

MASTER = "master-forecast-key-123456"
ADMIN = {"Authorization": f"Bearer {MASTER}"}
PICO = 10**12
US = 10**6
HI: Any = [{"role": "user", "content": "hi"}]
USAGE = {"prompt_tokens": 8, "completion_tokens": 20, "total_tokens": 28}
COST = 8 * 1_000_000 + 20 * 2_000_000  # 8 input at $1/M, 20 output at $2/M: 48,000,000 pico a request
NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
InProcessFactory = Callable[[dict[str, Any]], AbstractAsyncContextManager[InProcess]]


def usd(pico: int | None) -> float | None:
    return None if pico is None else pico / PICO


def spend(spent: int, budget: int | None, end: datetime | None, reserved: int = 0) -> Spend:
    remaining = None if budget is None else max(budget - spent - reserved, 0)
    return Spend(spent, reserved, budget, remaining, end)


# --- the arithmetic --------------------------------------------------------------------------

def test_rate_projection_and_exhaustion_are_exact() -> None:
    # $6 spent of $20, $3 in the last hour, two hours of the period left
    f = Forecast(spend(6 * PICO, 20 * PICO, NOW + timedelta(hours=2)), 3 * PICO, 3600, NOW)
    assert f.rate_pico_per_hour == 3 * PICO
    assert f.projected_period_pico == 12 * PICO  # 6 + 3/h x 2 h
    assert f.exhaustion_us == 16_800 * US and f.exhaustion_s == 16_800.0  # $14 left at $3/h: 4 h 40 min
    assert f.exhaustion_at == NOW + timedelta(hours=4, minutes=40)
    assert f.period_left_us == 7200 * US and f.period_left_s == 7200.0
    assert f.runs_out_before_period_end is False  # the period ends first

    # $4 in the last half hour: $8/h, out of money in 1 h 45 min, before the period's end
    f = Forecast(spend(6 * PICO, 20 * PICO, NOW + timedelta(hours=2)), 4 * PICO, 1800, NOW)
    assert f.rate_pico_per_hour == 8 * PICO
    assert f.projected_period_pico == 22 * PICO
    assert f.exhaustion_s == 6300.0 and f.exhaustion_at == NOW + timedelta(hours=1, minutes=45)
    assert f.runs_out_before_period_end is True


def test_reserved_money_counts_as_spent_and_fractions_round_once() -> None:
    # 1 pico in 7 s: 514.285... pico/h shows as 514; $1 left (of which holds take $0.25)
    f = Forecast(spend(0, PICO, NOW + timedelta(seconds=10), reserved=PICO // 4), 1, 7, NOW)
    assert f.rate_pico_per_hour == 514
    assert f.projected_period_pico == 1  # 10/7 of a pico, rounded
    assert f.exhaustion_us == 3 * PICO // 4 * 7 * US  # remaining x window / window spend
    assert f.exhaustion_s == 5.25e12 and f.runs_out_before_period_end is False
    f = Forecast(spend(0, PICO, NOW + timedelta(seconds=10)), 3, 7, NOW + timedelta(microseconds=1))
    assert f.period_left_us == 10 * US - 1
    assert f.projected_period_pico == round(Fraction(3 * (10 * US - 1), 7 * US)) == 4


def test_spending_nothing_never_runs_out() -> None:
    f = Forecast(spend(5 * PICO, 20 * PICO, NOW + timedelta(days=3)), 0, 3600, NOW)
    assert f.rate_pico_per_hour == 0 and f.projected_period_pico == 5 * PICO
    assert f.exhaustion_us is None and f.exhaustion_s == math.inf and f.exhaustion_at is None
    assert f.runs_out_before_period_end is False


def test_a_total_budget_has_no_end_but_still_runs_out() -> None:
    f = Forecast(spend(5 * PICO, 20 * PICO, None), 2 * PICO, 3600, NOW)
    assert f.projected_period_pico is None and f.period_left_us is None and f.period_left_s == math.inf
    assert f.exhaustion_s == 27_000.0 and f.exhaustion_at == NOW + timedelta(hours=7, minutes=30)
    assert f.runs_out_before_period_end is False  # no period end to run out before


def test_without_a_budget_there_is_only_the_rate_and_the_projection() -> None:
    f = Forecast(spend(5 * PICO, None, NOW + timedelta(hours=1)), 2 * PICO, 3600, NOW)
    assert f.rate_pico_per_hour == 2 * PICO and f.projected_period_pico == 7 * PICO
    assert f.exhaustion_s == math.inf and f.exhaustion_at is None and f.runs_out_before_period_end is False


def test_an_exhausted_budget_has_run_out_now_even_when_refused_requests_spend_nothing() -> None:
    f = Forecast(spend(20 * PICO, 20 * PICO, NOW + timedelta(hours=5)), 0, 3600, NOW)
    assert f.exhaustion_us == 0 and f.exhaustion_at == NOW and f.runs_out_before_period_end is True
    past = Forecast(spend(20 * PICO, 20 * PICO, NOW - timedelta(seconds=1)), 0, 3600, NOW)
    assert past.period_left_us == 0 and past.runs_out_before_period_end is False


def test_a_date_past_the_calendar_is_never() -> None:
    f = Forecast(spend(0, 10**30, None), 1, 3600, NOW)  # 10^30 pico at 1 pico/h
    assert f.exhaustion_s == 3.6e33 and f.exhaustion_at is None


def test_the_default_window_is_an_hour() -> None:
    assert BudgetConfig().forecast_window_s == 3600


def _record(i: int, at: datetime, key_id: str, team: str, cost: int) -> LedgerRecord:
    return LedgerRecord(iso(at), f"req-{i}", key_id, "", team, "m", "openai", "", 8, 0, 0, 20, 0, 8, 0, 0, 40, 0,
                        cost, "miss", "", "200", 1.0)


def test_the_window_is_summed_per_key_and_team_from_the_ledger() -> None:
    now = datetime.now(UTC)
    ledger = MemoryLedger(LedgerConfig())
    for i, (ago_s, key_id, team, cost) in enumerate([
            (3601, "k1", "ml", 1000),  # just before the window
            (3600, "k1", "ml", 7),  # its first microsecond
            (1800, "k1", "ml", 11), (60, "k2", "ml", 13), (30, "k3", "", 17), (10, "", "ops", 19)]):
        ledger.add(_record(i, now - timedelta(seconds=ago_s), key_id, team, cost))
    ledger.add(_record(9, now, "k1", "ml", 10_000))  # the window excludes its end
    window = asyncio.run(window_spend(ledger, now, 3600))
    assert window.by_key == {"k1": 18, "k2": 13, "k3": 17}
    assert window.by_team == {"ml": 31, "ops": 19}


@pytest.mark.anyio
async def test_the_redis_window_is_read_incrementally(redis_url: str) -> None:
    """Each call decodes only the entries written since the one before; the window moves on."""
    from redis.asyncio import Redis

    from gateway.ledger.store_redis import RedisLedger

    client = Redis.from_url(redis_url)
    ledger = RedisLedger(client, f"test-{uuid.uuid4().hex[:8]}", LedgerConfig())
    read: list[int] = []
    xrange = client.xrange

    async def counted(*args: Any, **kw: Any) -> Any:
        rows = await xrange(*args, **kw)
        read.append(len(rows))
        return rows

    client.xrange = counted  # type: ignore[method-assign]
    now = datetime.now(UTC)
    hour = timedelta(hours=1)
    try:
        ledger.add(_record(0, now - timedelta(seconds=4000), "k1", "ml", 1000))  # before the window
        ledger.add(_record(1, now - timedelta(seconds=100), "k1", "ml", 5))
        await ledger.flush()
        assert await ledger.sums(now - hour, now) == {("k1", "ml"): 5}
        first = sum(read)
        ledger.add(_record(2, now + timedelta(seconds=1), "k1", "ml", 7))
        ledger.add(_record(3, now + timedelta(seconds=2), "k2", "", 3))
        await ledger.flush()
        later = now + timedelta(seconds=10)
        assert await ledger.sums(later - hour, later) == {("k1", "ml"): 12, ("k2", ""): 3}
        assert sum(read) - first == 2  # only the two new entries were read
        # an hour on, the record of 100 s before `now` has left the window; the others have not
        on = now + hour - timedelta(seconds=50)
        assert await ledger.sums(on - hour, on) == {("k1", "ml"): 7, ("k2", ""): 3}
    finally:
        await client.aclose()


# --- through a gateway, on each backend ------------------------------------------------------

def gateway_config(upstream: FakeUpstreamThread, backend: dict[str, Any], **budgets: Any) -> dict[str, Any]:
    return {
        "models": [model("fc-a", "openai", upstream, upstream_model="fc-a-up",
                         pricing={"input_per_mtok": 1, "output_per_mtok": 2})],
        "master_key": MASTER, "require_keys": True,
        "budgets": {"key_cache_ttl_s": 0, **budgets},
        "cache": {"response": {"enabled": False}},
        **backend,
    }


def backend_config(name: str, request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    if name == "memory":
        return {"storage": {"backend": "memory"}}
    if name == "sqlite":
        return {"storage": {"backend": "sqlite", "sqlite_path": str(tmp_path / "gateway.sqlite3")}}
    if name == "redis":
        return {"redis_url": request.getfixturevalue("redis_url"), "redis_prefix": f"test-{uuid.uuid4().hex[:8]}"}
    return {"database_url": request.getfixturevalue("database_url"),
            "database": {"schema_name": request.getfixturevalue("pg_schema"), "migrate_on_start": True},
            "ledger": {"journal_path": str(tmp_path / "ledger.jsonl")}}


async def admin(gw: InProcess, method: str, path: str, body: Any = None) -> Any:
    response = await gw.client.request(method, path, json=body, headers=ADMIN)
    assert response.status_code in (200, 201), response.text
    return response.json()


async def new_key(gw: InProcess, **fields: Any) -> tuple[str, str]:
    created = await admin(gw, "POST", "/admin/keys", fields)
    return created["id"], created["key"]


async def ask(gw: InProcess, secret: str, times: int) -> list[int]:
    """`times` requests by the openai client; the cost each was told, in pico-USD."""
    client = gw.openai(api_key=secret)
    costs = []
    for _ in range(times):
        raw = await client.chat.completions.with_raw_response.create(model="fc-a", messages=HI, max_tokens=20)
        costs.append(int(Decimal(raw.headers["x-gateway-cost-usd"]) * PICO))
    return costs


async def scenario(gw: InProcess) -> dict[str, Any]:
    """Teams ml ($0.000288 a day), ops ($5 in total), idle ($1 a week, no keys) and free (no
    budget); keys a and b in ml, c in ops, d in free; and an old ledger record outside the window."""
    await admin(gw, "PUT", "/admin/teams/ml", {"budget_usd": "0.000288", "budget_period": "daily"})
    await admin(gw, "PUT", "/admin/teams/ops", {"budget_usd": 5})
    await admin(gw, "PUT", "/admin/teams/idle", {"budget_usd": 1, "budget_period": "weekly"})
    await admin(gw, "PUT", "/admin/teams/free", {})
    ids = {}
    costs: dict[str, list[int]] = {}
    for name, fields, times in (("a", {"team": "ml", "budget_usd": "0.001", "budget_period": "monthly"}, 3),
                                ("b", {"team": "ml"}, 2), ("c", {"team": "ops"}, 1), ("d", {"team": "free"}, 1)):
        ids[name], secret = await new_key(gw, alias=name, **fields)
        costs[name] = await ask(gw, secret, times)
    assert all(c == COST for cs in costs.values() for c in cs), costs
    # spent two hours ago (not through the budgets): the ledger has it, the window does not
    gw.state.ledger.add(_record(0, datetime.now(UTC) - timedelta(hours=2), ids["a"], "ml", 10**9))
    await gw.drain()
    return ids


def expected(body: dict[str, Any], generated: datetime, spent: int, window: int, budget: int | None,
             period_end: datetime | None) -> dict[str, Any]:
    """What a row of /admin/forecast must say, computed here from the pico figures."""
    remaining = None if budget is None else budget - spent
    left = None if period_end is None else (period_end - generated) // timedelta(microseconds=1)
    exhaustion = None if remaining is None or window == 0 else round(Fraction(remaining * 3600 * US, window))
    return {
        **body, "budget_usd": usd(budget), "spent_usd": usd(spent), "reserved_usd": 0.0,
        "remaining_usd": usd(remaining), "window_spend_usd": usd(window), "burn_rate_usd_per_hour": usd(window),
        "projected_period_spend_usd": None if left is None else usd(spent + round(Fraction(window * left, 3600 * US))),
        "period_end": None if period_end is None else period_end.isoformat(),
        "projected_exhaustion_at": None if exhaustion is None else (generated + timedelta(microseconds=exhaustion)
                                                                    ).isoformat(),
        "exhaustion_seconds": None if exhaustion is None else exhaustion / US,
        "runs_out_before_period_end": exhaustion is not None and left is not None and exhaustion < left,
    }


def period_ends(now: datetime) -> dict[str, datetime]:
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    first = day.replace(day=1)
    month = first.replace(year=first.year + 1, month=1) if first.month == 12 else first.replace(month=first.month + 1)
    return {"daily": day + timedelta(days=1), "weekly": day + timedelta(days=7 - day.weekday()), "monthly": month}


@pytest.mark.parametrize("backend", ["memory", "sqlite", "redis", "postgres"])
def test_admin_forecast_from_the_ledger(backend: str, in_process: InProcessFactory, upstream: FakeUpstreamThread,
                                        request: pytest.FixtureRequest, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)  # only the redis backend has Redis, from its config
    upstream.script("fc-a-up", {"usage": USAGE})
    config = gateway_config(upstream, backend_config(backend, request, tmp_path))

    async def run() -> None:
        async with in_process(config) as gw:
            ids = await scenario(gw)
            assert (await gw.client.get("/admin/forecast")).status_code == 401
            body = await admin(gw, "GET", "/admin/forecast")
            generated = datetime.fromisoformat(body["generated_at"])
            ends = period_ends(generated)
            assert body["window_s"] == 3600
            assert body["teams"] == [
                expected({"team": "free", "budget_period": "total"}, generated, COST, COST, None, None),
                expected({"team": "idle", "budget_period": "weekly"}, generated, 0, 0, PICO, ends["weekly"]),
                expected({"team": "ml", "budget_period": "daily"}, generated, 5 * COST, 5 * COST, 6 * COST,
                         ends["daily"]),
                expected({"team": "ops", "budget_period": "total"}, generated, COST, COST, 5 * PICO, None),
            ]
            ml = body["teams"][2]
            assert ml["exhaustion_seconds"] == 720.0  # one request's worth left, five an hour: 12 minutes
            assert body["keys"] == [
                expected({"key_id": ids["d"], "alias": "d", "team": "free", "budget_period": "total"}, generated,
                         COST, COST, None, None),
                expected({"key_id": ids["a"], "alias": "a", "team": "ml", "budget_period": "monthly"}, generated,
                         3 * COST, 3 * COST, PICO // 1000, ends["monthly"]),
                expected({"key_id": ids["b"], "alias": "b", "team": "ml", "budget_period": "total"}, generated,
                         2 * COST, 2 * COST, None, None),
                expected({"key_id": ids["c"], "alias": "c", "team": "ops", "budget_period": "total"}, generated,
                         COST, COST, None, None),
            ]
            assert body["keys"][1]["exhaustion_seconds"] == 21_400.0  # $0.000856 left at $0.000144/h
            assert body["teams"][3]["exhaustion_seconds"] == 374_996_400.0

            only_ops = await admin(gw, "GET", "/admin/forecast?team=ops")
            assert [t["team"] for t in only_ops["teams"]] == ["ops"]
            assert [k["key_id"] for k in only_ops["keys"]] == [ids["c"]]
            only_a = await admin(gw, "GET", f"/admin/forecast?key_id={ids['a']}")
            assert [t["team"] for t in only_a["teams"]] == ["ml"]
            assert [k["key_id"] for k in only_a["keys"]] == [ids["a"]]

    asyncio.run(run())


def test_the_gauges_on_metrics(in_process: InProcessFactory, upstream: FakeUpstreamThread, tmp_path: Path,
                               request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    upstream.script("fc-a-up", {"usage": USAGE})

    async def run() -> None:
        async with in_process(gateway_config(upstream, backend_config("sqlite", request, tmp_path))) as gw:
            await scenario(gw)
            before = datetime.now(UTC)
            await gw.state.access.refresh_gauges(gw.state.ledger)  # what the loop does every gauge_interval_s
            after = datetime.now(UTC)
            response = await gw.client.get("/metrics", headers=ADMIN)
            assert response.status_code == 200, response.text
            text = response.text

            def gauge(name: str, team: str) -> float:
                return metric_value(text, f"gateway_budget_{name}_seconds", team=team)

            assert gauge("projected_exhaustion", "ml") == 720.0
            assert gauge("projected_exhaustion", "ops") == 374_996_400.0
            assert gauge("projected_exhaustion", "idle") == math.inf  # spends nothing
            assert gauge("period_remaining", "ops") == math.inf  # 'total'
            for team, period in (("ml", "daily"), ("idle", "weekly")):
                end = period_ends(before)[period]
                left = gauge("period_remaining", team)
                assert (end - after).total_seconds() <= left <= (end - before).total_seconds()
            assert 'team="free"' not in "".join(line for line in text.splitlines() if "projected_exhaustion" in line)

    asyncio.run(run())


def test_the_gauge_loop_publishes_the_forecast(in_process: InProcessFactory, upstream: FakeUpstreamThread,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    upstream.script("fc-a-up", {"usage": USAGE})

    async def run() -> None:
        config = gateway_config(upstream, {"storage": {"backend": "memory"}}, gauge_interval_s=0.05)
        async with in_process(config) as gw:
            await admin(gw, "PUT", "/admin/teams/ml", {"budget_usd": "0.000288", "budget_period": "daily"})
            _, secret = await new_key(gw, team="ml")
            await ask(gw, secret, 2)
            await gw.drain()
            deadline = time.monotonic() + 5  # the loop's next round, every 0.05 s
            # $0.000192 left at $0.000096/h: two hours
            while (seconds := gw.metric("gateway_budget_projected_exhaustion_seconds", team="ml")) != 7200.0:
                assert time.monotonic() < deadline, f"the gauge loop did not set the forecast ({seconds})"
                await asyncio.sleep(0.02)
            assert gw.metric("gateway_budget_period_remaining_seconds", team="ml") > 0

    asyncio.run(run())


# --- the dashboard ---------------------------------------------------------------------------

class _Forecast(HTMLParser):
    """The rows of the dashboard's `forecast` table, cell texts by team."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, list[str]] = {}
        self._on = False
        self._row: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self._on = ("id", "forecast") in attrs
        elif self._on and tag == "tr":
            self._row = []
        elif self._on and tag == "td" and self._row is not None:
            self._row.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "tr" and self._row:
            self.rows[self._row[0]] = self._row[1:]
        if tag in ("tr", "table"):
            self._row = None
        if tag == "table":
            self._on = False

    def handle_data(self, data: str) -> None:
        if self._row:
            self._row[-1] += data


def test_render_shows_each_teams_forecast() -> None:
    forecasts = [
        (Team(name="ml", budget_pico=20 * PICO, budget_period="daily"),
         Forecast(spend(6 * PICO, 20 * PICO, NOW + timedelta(hours=2)), 4 * PICO, 1800, NOW)),
        (Team(name="ops", budget_pico=5 * PICO), Forecast(spend(PICO, 5 * PICO, None), 0, 1800, NOW)),
        (Team(name="free"), Forecast(spend(3, None, None), 3, 1800, NOW)),
    ]
    page = _Forecast()
    page.feed(render(Summary(), "2026-11-26", "2026-11-26", forecasts, 1800))
    assert page.rows == {
        "ml": ["$20", "daily", "$6", "$8", "$22", "2026-11-26 11:45:00 UTC (before the period ends)"],
        "ops": ["$5", "total", "$1", "$0", "—", "not at this rate"],
        "free": ["—", "total", "$0.000000000003", "$0.000000000006", "—", "not at this rate"],
    }
    assert "<tr class=runs-out><td class=\"name\">ml</td>" in render(Summary(), "a", "b", forecasts, 1800)


def test_the_dashboard_shows_the_forecast(in_process: InProcessFactory, upstream: FakeUpstreamThread,
                                          request: pytest.FixtureRequest, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    upstream.script("fc-a-up", {"usage": USAGE})

    async def run() -> None:
        async with in_process(gateway_config(upstream, backend_config("memory", request, tmp_path))) as gw:
            await scenario(gw)
            before = datetime.now(UTC)
            response = await gw.client.get("/dashboard", headers=ADMIN)
            after = datetime.now(UTC)
            assert response.status_code == 200
            page = _Forecast()
            page.feed(response.text)
            assert set(page.rows) == {"free", "idle", "ml", "ops"}
            assert page.rows["ops"][:5] == ["$5", "total", "$0.000048", "$0.000048", "—"]
            assert page.rows["idle"] == ["$1", "weekly", "$0", "$0", "$0", "not at this rate"]
            assert page.rows["free"] == ["—", "total", "$0.000048", "$0.000048", "—", "not at this rate"]
            budget, period, spent, rate, projected, runs_out = page.rows["ml"]
            assert (budget, period, spent, rate) == ("$0.000288", "daily", "$0.00024", "$0.00024")
            end = period_ends(before)["daily"]

            def projection(at: datetime) -> int:
                return 5 * COST + round(Fraction(5 * COST * ((end - at) // timedelta(microseconds=1)), 3600 * US))

            assert projection(after) <= int(Decimal(projected.removeprefix("$")) * PICO) <= projection(before)
            at = datetime.strptime(runs_out[:19], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
            assert before.replace(microsecond=0) + timedelta(minutes=12) <= at <= after + timedelta(minutes=12)

    asyncio.run(run())


# --- the alert -------------------------------------------------------------------------------

def test_the_alert_fires_only_when_the_budget_runs_out_before_its_period_ends() -> None:
    prom = ROOT / "deploy" / "prometheus"
    rules = {r["alert"]: r for g in yaml.safe_load((prom / "alerts.yml").read_text())["groups"]
             for r in g["rules"] if "alert" in r}
    rule = rules["GatewayBudgetRunsOutBeforePeriodEnd"]
    assert "gateway_budget_projected_exhaustion_seconds" in rule["expr"] and rule["for"] == "15m"
    tests = yaml.safe_load((prom / "alerts_test.yml").read_text())["tests"]
    group = next(t for t in tests if any(a["alertname"] == "GatewayBudgetRunsOutBeforePeriodEnd"
                                         for a in t["alert_rule_test"]))
    teams = {s["series"].split('team="')[1].split('"')[0] for s in group["input_series"]}
    # runs out in an hour; spends nothing; the period ends first; 'total'; already out; 10 minutes only
    assert teams == {"fast", "idle", "late", "lifetime", "out", "blip"}
    fired = [a for t in group["alert_rule_test"] for a in t["exp_alerts"]]
    assert [a["exp_labels"]["team"] for a in fired] == ["fast", "out"]
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not on PATH (apt-get install prometheus)")
    result = subprocess.run([promtool, "test", "rules", "alerts_test.yml"], cwd=prom, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr

