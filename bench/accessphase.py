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


def gateway_config(config: Path, tmp: Path, name: str, extra: str = "") -> Path:
    """The bench config on Redis (a fresh private prefix) with the master key, plus ``extra`` lines.
    The bench config's `storage: {backend: memory}` goes: beside `redis_url` it is a config error."""
    text = config.read_text().replace("storage: {backend: memory}\n", "")
    path = tmp / f"gateway-{name}.yaml"
    path.write_text(f"redis_url: redis://127.0.0.1:6379/0\nredis_prefix: bench-{uuid.uuid4().hex[:8]}\n"
                    f"master_key: {MASTER}\n{extra}" + text)
    return path


def _config(config: Path, tmp: Path) -> Path:
    return gateway_config(config, tmp, "access")


def new_key(url: str) -> str:
    """A virtual key with a budget and RPM/TPM limits (none of them reached by the bench)."""
    resp = httpx.post(f"{url}/admin/keys", headers={"Authorization": f"Bearer {MASTER}"},
                      json={"alias": "bench", "team": "bench", "budget_usd": 1000, "rpm": 10**6, "tpm": 10**9})
    resp.raise_for_status()
    return str(resp.json()["key"])


def keyed_rounds(run: Any, gws: dict[str, tuple[str, str]], args: Any, rounds: int = 3) -> dict[str, dict[str, Any]]:
    """``rounds`` rounds of the 50 ms request at 200 req/s, anonymous and with the key, on each gateway
    (name -> (url, key)); the order alternates by round (anon, key, key, anon, ...) and, with more
    than one gateway, so does the gateways' order. Per gateway: p50/p99 per run and mode, and
    key - anonymous of the mean p50s and p99s."""
    body = loadgen.chat_body(SLOW)
    p50 = {g: {"anonymous": [], "key": []} for g in gws}
    p99 = {g: {"anonymous": [], "key": []} for g in gws}
    names = list(gws)
    for i in range(rounds):
        for j, g in enumerate(names if i % 2 == 0 else names[::-1]):
            url, key = gws[g]
            hdrs = {"anonymous": None, "key": {"Authorization": f"Bearer {key}"}}
            tag = f" {g}" if len(gws) > 1 else ""
            for mode in (("anonymous", "key") if (i + j) % 2 == 0 else ("key", "anonymous")):
                r = run.measure(f"access{tag} {mode} 200/s #{i + 1}", "gateway", lambda u=url, h=hdrs[mode]:
                                loadgen.open_loop(u + CHAT_PATH, body, 200.0, args.duration, args.warmup, headers=h))
                p50[g][mode].append(r["latency_ms"]["p50"])
                p99[g][mode].append(r["latency_ms"]["p99"])
    return {g: {"p50_ms": p50[g], "p99_ms": p99[g],
                "p50_added_ms": statistics.mean(p50[g]["key"]) - statistics.mean(p50[g]["anonymous"]),
                "p99_added_ms": statistics.mean(p99[g]["key"]) - statistics.mean(p99[g]["anonymous"])}
            for g in gws}


def access(run: Any, ps: Procs, tmp: Path, config: Path, args: Any, log: Callable[[str], None]) -> dict[str, Any]:
    if not _redis_up():
        log("access phase skipped: no Redis on 127.0.0.1:6379")
        return {"skipped": "no Redis on 127.0.0.1:6379"}
    gw = ps.start_gateway(_config(config, tmp))
    try:
        key = new_key(gw.url)
        res = keyed_rounds(run, {"redis": (gw.url, key)}, args)["redis"]
        spent = httpx.get(f"{gw.url}/v1/spend", headers={"Authorization": f"Bearer {key}"}).json()
    finally:
        gw.stop()
    return {**res, "key_spend_usd": spent["spend_usd"]}


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
