"""The spend ledger end to end: a real gateway on real Redis, a mixed workload (streaming and
not, two models by name, a tier, a response-cache hit, with and without keys and teams), then:
the sum of `usage.cost` == the ledger's total == the sum of `gateway_spend_usd_total`; the daily
aggregates agree with the ledger for every grouping; the CLI; and the dashboard in headless
Chromium shows the ledger's numbers."""

from __future__ import annotations

import csv
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from conftest import ROOT, Gateway, model

from gateway.fake_upstream import FakeUpstreamThread
from gateway.money.pricing import usd_text

MASTER = "master-ledger-key-123456"
HI: Any = [{"role": "user", "content": "hi"}]
USAGE_A = {"prompt_tokens": 1234, "completion_tokens": 567, "total_tokens": 1801}
USAGE_B = {"prompt_tokens": 2000, "completion_tokens": 333, "total_tokens": 2333,
           "prompt_tokens_details": {"cached_tokens": 1024}, "completion_tokens_details": {"reasoning_tokens": 100}}


def ledger_config(upstream: FakeUpstreamThread, redis_url: str) -> dict[str, Any]:
    return {
        "models": [
            model("led-a", "openai", upstream, upstream_model="led-a-up", quality=80,
                  pricing={"input_per_mtok": 1.1, "output_per_mtok": 4.4}),
            model("led-b", "openai", upstream, upstream_model="led-b-up", quality=90,
                  pricing={"input_per_mtok": 3, "output_per_mtok": 15, "cached_input_per_mtok": 0.3,
                           "reasoning_per_mtok": 17}),
        ],
        "tiers": {"led-tier": {"min_quality": 70}},
        "master_key": MASTER, "redis_url": redis_url, "redis_prefix": f"test-{uuid.uuid4().hex[:8]}",
        "ledger": {"flush_interval_s": 0.05},
    }


def pico(usd: float) -> int:
    return int(Decimal(repr(usd)) * 10**12)


def admin_get(gw: Gateway, path: str, **params: str) -> httpx.Response:
    return httpx.get(gw.url + path, params=params, headers={"Authorization": f"Bearer {MASTER}"}, timeout=30)


def ledger_records(gw: Gateway, expected: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 10
    while True:
        lines = admin_get(gw, "/admin/ledger", format="jsonl").text.splitlines()
        if len(lines) >= expected or time.monotonic() > deadline:
            return [orjson.loads(line) for line in lines]
        time.sleep(0.05)


def _ask(gw: Gateway, api_key: str, model_name: str, stream: bool, **kw: Any) -> int:
    """One request; returns the cost the client was told, in pico-USD."""
    client = gw.client(api_key=api_key)
    if stream:
        chunks = list(client.chat.completions.create(model=model_name, messages=HI, stream=True,
                                                     stream_options={"include_usage": True}, **kw))
        return pico(chunks[-1].usage.model_dump()["cost"])
    raw = client.chat.completions.with_raw_response.create(model=model_name, messages=HI, **kw)
    cost = pico(raw.parse().usage.model_dump()["cost"])
    assert pico(float(raw.headers["x-gateway-cost-usd"])) == cost
    return cost


@pytest.fixture(scope="module")
def run(upstream: FakeUpstreamThread, redis_url: str) -> Iterator[tuple[Gateway, list[int]]]:
    gw = Gateway(ledger_config(upstream, redis_url))
    team_key = httpx.post(gw.url + "/admin/keys", json={"alias": "team-key", "team": "research"},
                          headers={"Authorization": f"Bearer {MASTER}"}).json()["key"]
    solo_key = httpx.post(gw.url + "/admin/keys", json={"alias": "solo"},
                          headers={"Authorization": f"Bearer {MASTER}"}).json()["key"]
    upstream.script("led-a-up", {"usage": USAGE_A})
    upstream.script("led-b-up", {"usage": USAGE_B})
    costs = []
    for i in range(3):
        costs.append(_ask(gw, "anonymous", "led-a", stream=False, max_tokens=20))
        costs.append(_ask(gw, team_key, "led-b", stream=True))
        costs.append(_ask(gw, solo_key, "led-tier", stream=i % 2 == 0))
        costs.append(_ask(gw, team_key, "led-tier", stream=i % 2 == 1))
    costs.append(_ask(gw, team_key, "led-b", stream=False, temperature=0))  # stored in the response cache
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # the cache write runs in the background
        raw = gw.client(api_key=team_key).chat.completions.with_raw_response.create(
            model="led-b", messages=HI, temperature=0)
        costs.append(pico(raw.parse().usage.model_dump()["cost"]))
        if raw.headers["x-gateway-cache"] == "hit":
            break
    yield gw, costs
    gw.stop()


def test_responses_ledger_and_metrics_agree(run: tuple[Gateway, list[int]]) -> None:
    gw, costs = run
    records = ledger_records(gw, len(costs))
    assert len(records) == len(costs)
    assert sum(r["cost_pico"] for r in records) == sum(costs)  # exact, in pico-USD
    assert sorted(r["cost_pico"] for r in records) == sorted(costs)
    metric_total = gw.metric("gateway_spend_usd_total")
    assert round(metric_total, 6) == round(sum(costs) / 10**12, 6)  # to the micro-dollar
    assert sum(costs) > 0 and costs[-1] == 0  # the last request was a response-cache hit
    hit = records[-1]
    assert hit["cache"] == "hit" and hit["cost_pico"] == 0 and hit["cache_saved_pico"] == costs[-2] > 0
    routed = [r for r in records if r["tier"] == "led-tier"]
    assert len(routed) == 6 and {r["model"] for r in routed} == {"led-a"}
    assert all(r["route"].startswith("cheapest; 2 candidates") and r["routing_saved_pico"] > 0 for r in routed)
    b = next(r for r in records if r["model"] == "led-b" and r["cache"] != "hit")
    tokens = (b["input_tokens"], b["cached_input_tokens"], b["output_tokens"], b["reasoning_tokens"])
    assert tokens == (976, 1024, 233, 100)
    assert b["cost_pico"] == sum(b[f"cost_{k}_pico"] for k in ("input", "cached_input", "cache_write", "output",
                                                               "reasoning"))
    assert b["team"] == "research" and b["key_alias"] == "team-key" and b["key_id"] and b["status"] == "200"
    assert {r["provider"] for r in records} == {"openai"} and all(r["latency_ms"] > 0 for r in records)
    saved = sum(r["routing_saved_pico"] for r in records) / 10**12
    assert round(gw.metric("gateway_routing_saved_usd_total"), 6) == round(saved, 6)


def test_daily_aggregates_agree_with_the_ledger(run: tuple[Gateway, list[int]]) -> None:
    gw, costs = run
    ledger_records(gw, len(costs))
    for group_by in ("model", "key", "team", "tier", "day"):
        deadline = time.monotonic() + 10
        while True:  # the daily aggregates are written in batches, about once a second
            bodies = [admin_get(gw, "/admin/spend", group_by=group_by, source=s).json() for s in ("stats", "ledger")]
            stats, ledger = ({row["group"]: row["spend_usd"] for row in b["data"] if row["spend_usd"]} for b in bodies)
            if stats == ledger or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert stats == ledger and stats, group_by
        assert bodies[0]["total_usd"] == bodies[1]["total_usd"]
    tiers = admin_get(gw, "/admin/spend", group_by="tier", source="ledger").json()["data"]
    assert [t["group"] for t in tiers] == ["led-tier"]


def test_cli_spend_and_export(run: tuple[Gateway, list[int]], tmp_path: Path) -> None:
    gw, costs = run
    records = ledger_records(gw, len(costs))
    base = [sys.executable, "-m", "gateway", "spend", "--url", gw.url, "--master-key", MASTER]
    out = subprocess.run([*base, "--group-by", "team"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    team_pico = sum(r["cost_pico"] for r in records if r["team"] == "research")
    assert re.search(rf"^research\s+{team_pico / 10**12:.6f}$", out.stdout, re.M), out.stdout
    target = tmp_path / "ledger.csv"
    out = subprocess.run([*base, "export", "--format", "csv", "--out", str(target)], capture_output=True, text=True,
                         cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader(target.read_text().splitlines()))
    assert len(rows) == len(records) and sum(int(r["cost_pico"]) for r in rows) == sum(costs)
    out = subprocess.run([*base, "export"], capture_output=True, cwd=ROOT, timeout=60)
    assert [orjson.loads(line) for line in out.stdout.splitlines()] == records
    bad = subprocess.run([*base[:-1], "wrong-key"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert bad.returncode == 1


class _Tables(HTMLParser):
    """id -> {first cell: second cell} for every table; id -> text for the summary cards."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, dict[str, str]] = defaultdict(dict)
        self.cards: dict[str, str] = {}
        self._table = self._card = ""
        self._row: list[str] = []
        self._in_cell = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "table":
            self._table = found.get("id") or ""
        elif tag == "tr":
            self._row = []
        elif tag == "td":
            self._in_cell = True
            self._row.append("")
        elif tag == "dd":
            self._card = found.get("id") or ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self._in_cell = False
        elif tag == "tr" and len(self._row) >= 2 and self._table:
            self.tables[self._table][self._row[0]] = self._row[1]
        elif tag == "dd":
            self._card = ""

    def handle_data(self, data: str) -> None:
        if self._in_cell:
            self._row[-1] += data
        elif self._card:
            self.cards[self._card] = self.cards.get(self._card, "") + data


def _chromium(*args: str) -> subprocess.CompletedProcess[bytes]:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        pytest.skip("headless Chromium is not installed (apt-get install -y chromium)")
    return subprocess.run([binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                           "--hide-scrollbars", *args], capture_output=True, timeout=90)


def test_dashboard_in_headless_chromium_shows_the_ledger(run: tuple[Gateway, list[int]], tmp_path: Path) -> None:
    gw, costs = run
    records = ledger_records(gw, len(costs))
    assert httpx.get(gw.url + "/dashboard").status_code == 401
    assert httpx.get(gw.url + "/dashboard", params={"key": "nope"}).status_code == 401
    assert httpx.get(gw.url + "/dashboard", headers={"Authorization": f"Bearer {MASTER}"}).status_code == 200
    url = f"{gw.url}/dashboard?key={MASTER}"
    dom = _chromium(f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr.decode(errors="replace")[-2000:]
    page = _Tables()
    page.feed(dom.stdout.decode())

    def expect(key: str) -> dict[str, str]:
        sums: dict[str, int] = defaultdict(int)
        for r in records:
            sums[r[key] if key != "day" else r["time"][:10]] += r["cost_pico"]
        return {(k or "(no team)"): f"${usd_text(v)}" for k, v in sums.items()}

    assert page.tables["by-model"] == expect("model")
    assert page.tables["by-team"] == expect("team")
    assert page.tables["by-day"] == expect("day")
    assert page.cards["total"] == f"${usd_text(sum(costs))}"
    assert page.cards["requests"] == str(len(records))
    assert page.cards["routing-saved"] == f"${usd_text(sum(r['routing_saved_pico'] for r in records))}"
    assert page.cards["cache-saved"] == f"${usd_text(sum(r['cache_saved_pico'] for r in records))}"
    shot = tmp_path / "dashboard.png"
    taken = _chromium(f"--user-data-dir={tmp_path / 'profile2'}", f"--screenshot={shot}", "--window-size=1200,900",
                      url)
    assert taken.returncode == 0, taken.stderr.decode(errors="replace")[-2000:]
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 5000
    shutil.copy(shot, Path(tempfile.gettempdir()) / "gateway-dashboard.png")  # for a human look
