"""Virtual keys, budgets and rate limits over HTTP: two gateway processes on one real Redis,
the fake upstream, the official openai client."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import openai
import pytest
from conftest import Gateway, model

from gateway.access.journal import SpendJournal
from gateway.fake_upstream import FakeUpstreamThread

MASTER = "master-test-key-123456"
HI: Any = [{"role": "user", "content": "hi"}]
# 8 input (the gateway's own count of HI) + 20 output tokens at $1/M and $2/M: $0.000048 a request.
# Budget holds reserve the worst case: 9 input (8 + the 10 % margin, rounded up) + 20 output = $0.000049.
USAGE = {"prompt_tokens": 8, "completion_tokens": 20, "total_tokens": 28}
COST = 0.000048


def access_config(upstream: FakeUpstreamThread, redis_url: str, **extra: Any) -> dict[str, Any]:
    return {
        "models": [model(name, "openai", upstream, upstream_model=f"{name}-up", quality=q,
                         pricing={"input_per_mtok": 1, "output_per_mtok": 2})
                   for name, q in (("acc-a", 80), ("acc-b", 90))],
        "tiers": {"acc-tier": {"min_quality": 70}},
        "master_key": MASTER, "require_keys": True,
        "redis_url": redis_url, "redis_prefix": f"test-{uuid.uuid4().hex[:8]}",
        "budgets": {"hold_ttl_s": 2, "key_cache_ttl_s": 0.5, "gauge_interval_s": 0.2},
        "cache": {"response": {"enabled": False}},
        **extra,
    }


@pytest.fixture(scope="module")
def pair(upstream: FakeUpstreamThread, redis_url: str) -> Iterator[tuple[Gateway, Gateway]]:
    config = access_config(upstream, redis_url)
    a, b = Gateway(config), Gateway(config)
    yield a, b
    a.stop()
    b.stop()


def admin(gw: Gateway, method: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
    return httpx.request(method, gw.url + path, json=body, headers={"Authorization": f"Bearer {MASTER}"})


def new_key(gw: Gateway, **fields: Any) -> tuple[str, str]:
    resp = admin(gw, "POST", "/admin/keys", fields)
    assert resp.status_code == 201, resp.text
    return resp.json()["id"], resp.json()["key"]


def ask(gw: Gateway, secret: str, model_name: str = "acc-a", **kw: Any) -> Any:
    return gw.client(api_key=secret, **kw).chat.completions.with_raw_response.create(
        model=model_name, messages=HI, max_tokens=20)


def admin_spend(gw: Gateway, group_by: str, group: str) -> float:
    """A group's figure from /admin/spend, once the aggregates are written (batched, ~1 s)."""
    deadline = time.monotonic() + 5
    while True:
        data = admin(gw, "GET", f"/admin/spend?group_by={group_by}").json()["data"]
        rows = {r["group"]: r["spend_usd"] for r in data}
        if group in rows or time.monotonic() > deadline:
            return float(rows[group])
        time.sleep(0.1)


def spend(gw: Gateway, secret: str) -> dict[str, Any]:
    return httpx.get(f"{gw.url}/v1/spend", headers={"Authorization": f"Bearer {secret}"}).json()


def settled_spend(gw: Gateway, secret: str) -> dict[str, Any]:
    """/v1/spend once nothing is reserved: settlements land just after their answers."""
    deadline = time.monotonic() + 5
    while (now := spend(gw, secret))["reserved_usd"] and time.monotonic() < deadline:
        time.sleep(0.02)
    return now


def test_unknown_missing_revoked_and_expired_keys_are_401(pair: tuple[Gateway, Gateway],
                                                          upstream: FakeUpstreamThread) -> None:
    a, b = pair
    upstream.script("acc-a-up", {"usage": USAGE})
    key_id, secret = new_key(a, alias="doomed")
    assert ask(b, secret).headers["x-gateway-model"] == "acc-a"  # created on A, valid on B
    for bad in ("sk-gw-not-a-real-key", "client-key"):
        with pytest.raises(openai.AuthenticationError) as info:
            ask(a, bad)
        assert info.value.status_code == 401 and bad not in str(info.value.body)
    assert admin(a, "DELETE", f"/admin/keys/{key_id}").json()["revoked"] is True
    time.sleep(0.6)  # B may trust its copy of the key for key_cache_ttl_s
    with pytest.raises(openai.AuthenticationError, match="revoked"):
        ask(b, secret)
    soon = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    _, expiring = new_key(a, expires_at=soon)
    assert ask(a, expiring).parse().choices
    time.sleep(1.1)
    with pytest.raises(openai.AuthenticationError, match="expired"):
        ask(a, expiring)
    for gw in (a, b):  # the secrets never reach logs or metrics
        assert secret not in gw.logs() and expiring not in gw.logs() and secret not in gw.metrics()
    assert admin(a, "GET", "/admin/keys").status_code == 200
    assert "key" not in admin(a, "GET", f"/admin/keys/{key_id}").json()
    assert httpx.get(f"{a.url}/admin/keys", headers={"Authorization": "Bearer wrong"}).status_code == 401


def test_models_and_tiers_a_key_may_not_use_are_403(pair: tuple[Gateway, Gateway],
                                                     upstream: FakeUpstreamThread) -> None:
    a, _ = pair
    upstream.script("acc-a-up", {"usage": USAGE})
    upstream.script("acc-b-up", {"usage": USAGE})
    _, only_b = new_key(a, models=["acc-b"])
    with pytest.raises(openai.PermissionDeniedError):
        ask(a, only_b, "acc-a")
    assert ask(a, only_b, "acc-b").parse().choices
    raw = ask(a, only_b, "acc-tier")  # routing skips acc-a (cheaper, but not allowed)
    assert raw.headers["x-gateway-model"] == "acc-b"
    _, no_tier = new_key(a, tiers=["other"])
    with pytest.raises(openai.PermissionDeniedError):
        ask(a, no_tier, "acc-tier")


def test_concurrent_requests_on_two_processes_never_overspend(
    pair: tuple[Gateway, Gateway], upstream: FakeUpstreamThread
) -> None:
    a, b = pair
    upstream.script("acc-a-up", {"usage": USAGE, "latency_ms": 50})
    _, secret = new_key(a, budget_usd="0.0005", team=f"t-{uuid.uuid4().hex[:6]}")
    calls_before = len(upstream.calls("acc-a-up"))

    def one(i: int) -> tuple[int, float]:
        client = (a if i % 2 else b).client(api_key=secret, max_retries=2)  # the client's default retries
        try:
            raw = client.chat.completions.with_raw_response.create(model="acc-a", messages=HI, max_tokens=20)
            return 200, raw.parse().usage.cost  # type: ignore[union-attr]
        except openai.RateLimitError as exc:
            assert exc.response.headers["x-should-retry"] == "false" and exc.code == "budget_exceeded"
            return 429, 0.0

    with ThreadPoolExecutor(64) as pool:
        results = list(pool.map(one, range(64)))
    ok = [cost for status, cost in results if status == 200]
    assert len(ok) + sum(1 for s, _ in results if s == 429) == 64
    assert 1 <= len(ok) <= 10  # at most 10 holds of $0.000049 fit in $0.0005
    assert len(upstream.calls("acc-a-up")) - calls_before == len(ok)  # 429s were not retried
    recorded = settled_spend(a, secret)
    assert recorded["spend_usd"] == pytest.approx(COST * len(ok), abs=1e-12) and recorded["spend_usd"] <= 0.0005
    assert recorded["spend_usd"] == pytest.approx(sum(ok), abs=1e-12) and recorded["reserved_usd"] == 0
    rejected = a.metric("gateway_budget_rejections_total") + b.metric("gateway_budget_rejections_total")
    assert rejected == 64 - len(ok)


def test_rpm_is_shared_across_processes(pair: tuple[Gateway, Gateway], upstream: FakeUpstreamThread) -> None:
    a, b = pair
    upstream.script("acc-a-up", {"usage": USAGE})
    _, secret = new_key(a, rpm=3)
    for gw in (a, b, a):
        assert ask(gw, secret).parse().choices
    with pytest.raises(openai.RateLimitError) as info:
        ask(b, secret)
    assert info.value.code == "rate_limit_exceeded" and int(info.value.response.headers["retry-after"]) >= 1


def test_team_budget_blocks_its_keys(pair: tuple[Gateway, Gateway], upstream: FakeUpstreamThread) -> None:
    a, _ = pair
    upstream.script("acc-a-up", {"usage": USAGE})
    team = f"team-{uuid.uuid4().hex[:6]}"
    assert admin(a, "PUT", f"/admin/teams/{team}", {"budget_usd": "0.00008"}).status_code == 200
    _, secret = new_key(a, team=team, budget_usd=10)
    # $0.000048 spent: the $0.000032 left pays for 9 input tokens and 11 output tokens, fewer than
    # the 16 a request may be capped to (tests/test_budget_cap.py): refused
    assert ask(a, secret).parse().choices
    with pytest.raises(openai.RateLimitError, match="team"):
        ask(a, secret)
    assert a.metric("gateway_budget_rejections_total", team=team) == 1
    deadline = time.monotonic() + 5  # gauges are refreshed every gauge_interval_s
    while a.metric("gateway_budget_used_ratio", team=team) != pytest.approx(48 / 80) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert a.metric("gateway_budget_used_ratio", team=team) == pytest.approx(48 / 80)
    assert a.metric("gateway_budget_remaining_usd", team=team) == pytest.approx(0.000032, abs=1e-12)
    assert admin_spend(a, "team", team) == COST


def test_disconnect_mid_stream_is_charged_for_what_was_produced(
    pair: tuple[Gateway, Gateway], upstream: FakeUpstreamThread
) -> None:
    a, _ = pair
    upstream.script("acc-b-up", {"output_tokens": 400, "itl_ms": 20})
    key_id, secret = new_key(a, budget_usd=1)
    with httpx.stream("POST", f"{a.url}/v1/chat/completions", headers={"Authorization": f"Bearer {secret}"},
                      json={"model": "acc-b", "messages": HI, "stream": True, "max_tokens": 500}) as resp:
        for i, _ in enumerate(resp.iter_lines()):
            if i >= 20:
                break
    charged = settled_spend(a, secret)
    assert charged["reserved_usd"] == 0 and 0 < charged["spend_usd"] < (10 + 400 * 2) / 1e6
    assert admin_spend(a, "key", key_id) == charged["spend_usd"]


def test_a_killed_process_frees_its_hold(upstream: FakeUpstreamThread, redis_url: str) -> None:
    config = access_config(upstream, redis_url)
    a, b = Gateway(config), Gateway(config)
    try:
        upstream.script("acc-a-up", {"usage": USAGE, "latency_ms": 5000})
        _, secret = new_key(a, budget_usd="0.00006")  # room for one worst case ($0.000049) only
        worker = threading.Thread(target=lambda: pytest.raises(openai.APIConnectionError, ask, a, secret), daemon=True)
        worker.start()
        deadline = time.monotonic() + 5  # A holds the budget once its request reaches the upstream
        while not upstream.calls("acc-a-up"):
            assert time.monotonic() < deadline, "A's request never reached the upstream"
            time.sleep(0.02)
        os.kill(a.proc.pid, signal.SIGKILL)
        upstream.script("acc-a-up", {"usage": USAGE})
        with pytest.raises(openai.RateLimitError):
            ask(b, secret)  # the dead process's hold still counts...
        time.sleep(2.1)  # ...until it expires (hold_ttl_s 2)
        assert ask(b, secret).parse().choices
        assert settled_spend(b, secret)["spend_usd"] == pytest.approx(COST, abs=1e-12)
    finally:
        a.stop()
        b.stop()


def test_redis_outage_fails_closed_and_the_journal_loses_no_spend(upstream: FakeUpstreamThread, tmp_path: Any) -> None:
    from conftest import free_port, start_redis_server

    port = free_port()
    redis = start_redis_server(port, tmp_path)
    journal = tmp_path / "journal.jsonl"
    config = access_config(upstream, f"redis://127.0.0.1:{port}/0", models=[
        model("acc-slow", "openai", upstream, upstream_model="acc-slow-up", pricing={"input_per_mtok": 1,
                                                                                     "output_per_mtok": 2})])
    config["budgets"] = {"hold_ttl_s": 30, "key_cache_ttl_s": 0.2, "journal_path": str(journal)}
    del config["tiers"]
    gw = Gateway(config)
    try:
        upstream.script("acc-slow-up", {"usage": USAGE})
        _, secret = new_key(gw, budget_usd=1)
        assert ask(gw, secret, "acc-slow").parse().choices
        upstream.script("acc-slow-up", {"usage": USAGE, "latency_ms": 1500})
        in_flight: list[Any] = []
        worker = threading.Thread(target=lambda: in_flight.append(ask(gw, secret, "acc-slow")))
        worker.start()
        deadline = time.monotonic() + 5  # its budget hold is taken before the upstream call
        while len(upstream.calls("acc-slow-up")) < 2:
            assert time.monotonic() < deadline, "the second request did not reach the upstream"
            time.sleep(0.02)
        redis.kill()  # mid-request: its settlement cannot reach Redis
        redis.wait(5)
        worker.join(10)
        assert in_flight and in_flight[0].parse().usage.cost == pytest.approx(COST, abs=1e-12)
        deadline = time.monotonic() + 5  # the settlement runs just after the answer
        while len(SpendJournal(journal).pending()) != 1:  # (a replay attempt may have moved the file aside)
            assert time.monotonic() < deadline, "the settlement was not journaled"
            time.sleep(0.05)
        time.sleep(0.3)  # past key_cache_ttl_s: nothing can be checked now
        with pytest.raises(openai.InternalServerError) as info:
            ask(gw, secret, "acc-slow")
        assert info.value.status_code == 503 and "unavailable" in str(info.value.body)
        redis = start_redis_server(port, tmp_path)  # back, with its data
        deadline = time.monotonic() + 10
        while spend(gw, secret).get("spend_usd") != pytest.approx(2 * COST, abs=1e-12):
            assert time.monotonic() < deadline, spend(gw, secret)
            time.sleep(0.2)
        while SpendJournal(journal).pending():  # replayed: its file goes once every entry is applied
            assert time.monotonic() < deadline, SpendJournal(journal).pending()
            time.sleep(0.05)
        assert ask(gw, secret, "acc-slow").parse().choices  # and business as usual
    finally:
        gw.stop()
        redis.kill()
        redis.wait(5)


def test_tpm_limit_counts_prompt_and_max_tokens(pair: tuple[Gateway, Gateway], upstream: FakeUpstreamThread) -> None:
    a, b = pair
    upstream.script("acc-a-up", {"usage": USAGE})
    _, secret = new_key(a, tpm=100)  # a request charges 8 counted input + 20 max_tokens = 28 tokens
    for gw in (a, b, a):
        assert ask(gw, secret).parse().choices
    with pytest.raises(openai.RateLimitError) as info:
        ask(b, secret)  # 84 + 28 > 100
    assert info.value.code == "rate_limit_exceeded" and "retry-after" in info.value.response.headers
    refused = a.metric("gateway_rate_limit_rejections_total")
    with pytest.raises(openai.RateLimitError, match="more than the 100 tokens per minute"):
        a.client(api_key=secret).chat.completions.create(model="acc-a", messages=HI, max_tokens=200)
    assert a.metric("gateway_rate_limit_rejections_total") == refused + 1


def test_keys_cli_creates_and_revokes(pair: tuple[Gateway, Gateway], upstream: FakeUpstreamThread) -> None:
    import json
    import subprocess
    import sys

    from conftest import ROOT

    a, _ = pair
    upstream.script("acc-a-up", {"usage": USAGE})

    def cli(*args: str) -> dict[str, Any]:
        out = subprocess.run([sys.executable, "-m", "gateway", *args, "--url", a.url], capture_output=True, text=True,
                             cwd=ROOT, env={**os.environ, "GATEWAY_MASTER_KEY": MASTER}, timeout=60)
        assert out.returncode == 0, out.stderr + out.stdout
        return json.loads(out.stdout)  # type: ignore[no-any-return]

    created = cli("keys", "create", "--alias", "from-cli", "--budget-usd", "0.5", "--models", "acc-a,acc-b")
    assert created["budget_usd"] == 0.5 and created["models"] == ["acc-a", "acc-b"]
    assert ask(a, created["key"]).parse().choices
    assert cli("keys", "revoke", created["id"])["revoked"] is True
    with pytest.raises(openai.AuthenticationError):
        ask(a, created["key"])
