"""9: what virtual keys cost. One gateway on Redis (127.0.0.1:6379) with a master key; the same
request (50 ms upstream, 200 req/s open loop) sent anonymously and with a virtual key that has a
budget and RPM/TPM limits, so each keyed request is authenticated, rate-limited, holds and
settles its budget and writes spend aggregates. Three rounds each, alternating (anon, key,
key, anon, anon, key); the difference of the mean p50s is what access control adds.
"""

from __future__ import annotations

import statistics
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import loadgen
from cachephase import SLOW, _redis_up
from procs import CHAT_PATH, Procs

MASTER = "bench-master-key"


def _config(config: Path, tmp: Path) -> Path:
    path = tmp / "gateway-access.yaml"
    path.write_text(f"redis_url: redis://127.0.0.1:6379/0\nredis_prefix: bench-{uuid.uuid4().hex[:8]}\n"
                    f"master_key: {MASTER}\n" + config.read_text())
    return path


def access(run: Any, ps: Procs, tmp: Path, config: Path, args: Any, log: Callable[[str], None]) -> dict[str, Any]:
    if not _redis_up():
        log("access phase skipped: no Redis on 127.0.0.1:6379")
        return {"skipped": "no Redis on 127.0.0.1:6379"}
    gw = ps.start_gateway(_config(config, tmp))
    try:
        key = httpx.post(f"{gw.url}/admin/keys", headers={"Authorization": f"Bearer {MASTER}"},
                         json={"alias": "bench", "team": "bench", "budget_usd": 1000, "rpm": 10**6,
                               "tpm": 10**9}).json()["key"]
        body = loadgen.chat_body(SLOW)
        modes = {"anonymous": None, "key": {"Authorization": f"Bearer {key}"}}
        p50: dict[str, list[float]] = {m: [] for m in modes}
        p99: dict[str, list[float]] = {m: [] for m in modes}
        for i in range(3):
            for mode in (("anonymous", "key") if i % 2 == 0 else ("key", "anonymous")):
                r = run.measure(f"access {mode} 200/s #{i + 1}", "gateway", lambda h=modes[mode]: loadgen.open_loop(
                    gw.url + CHAT_PATH, body, 200.0, args.duration, args.warmup, headers=h))
                p50[mode].append(r["latency_ms"]["p50"])
                p99[mode].append(r["latency_ms"]["p99"])
        spent = httpx.get(f"{gw.url}/v1/spend", headers={"Authorization": f"Bearer {key}"}).json()
    finally:
        gw.stop()
    return {"p50_ms": p50, "p99_ms": p99, "key_spend_usd": spent["spend_usd"],
            "p50_added_ms": statistics.mean(p50["key"]) - statistics.mean(p50["anonymous"])}


def figures(res: dict[str, Any]) -> dict[str, float]:
    a = res.get("access") or {}
    return {"access_p50_added_ms": a["p50_added_ms"]} if "p50_added_ms" in a else {}


def rows(a: dict[str, Any], verdict: Callable[[str], list[str]]) -> list[list[str]]:
    if "p50_added_ms" not in a:
        return [[f"Virtual keys: {a.get('skipped', 'not measured')}", "", "", "", "", ""]]
    p50, p99 = a["p50_ms"], a["p99_ms"]
    return [
        ["Virtual keys (auth + rate limit + budget hold/settle, Redis), 50 ms upstream, 200 req/s", "anonymous",
         "with key", "", "", ""],
        ["  Latency p50 (ms)", f"{statistics.mean(p50['anonymous']):.2f}", f"{statistics.mean(p50['key']):.2f}",
         f"{a['p50_added_ms']:+.3f}", *verdict("access_p50_added_ms")],
        ["  Latency p99 (ms)", f"{statistics.mean(p99['anonymous']):.2f}", f"{statistics.mean(p99['key']):.2f}",
         "", "", ""],
    ]
