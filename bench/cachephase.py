"""8: what caching costs and gives, on gateways with the response cache on (in memory, and in
Redis when one answers on 127.0.0.1:6379) next to the main gateway (cache off):

(a) response-cache hit: one deterministic request (temperature 0) repeated open-loop at 200/s
    with a 50 ms upstream behind it; every request after the first is a hit. For scale, the
    floor: the same load generator straight to the fake upstream answering at once. The target
    is judged on the same hits sent by wrk over one connection, back to back (the gateway's own
    time, without the Python generator's overhead and idle wake-ups);
(b) response-cache miss: a different deterministic request each time (lookup + store), same
    rate, against the same requests on the cache-off gateway; p50 difference;
(c) prefix lookup: in-process, a 32k-token conversation already seen (a resent conversation:
    token ids and block hashes memoised per part, as in production; also without the block
    memo): laying it out in 128-token blocks and looking up 15 models in the index (memory, and
    Redis). The first sight of the prompt (tokenising 32k tokens) is reported separately.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import statistics
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import loadgen
import orjson
from procs import CHAT_PATH, Procs
from wrkrun import run_wrk

SLOW = "bench-slow"  # 50 ms upstream
RATE = 200.0


def _redis_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=0.3) as s:
            s.sendall(b"PING\r\n")
            return s.recv(8).startswith(b"+PONG")
    except OSError:
        return False


def _body(i: int, tag: str) -> bytes:
    return orjson.dumps({"model": SLOW, "temperature": 0,
                         "messages": [{"role": "user", "content": f"Say hello ({tag} {i})"}]})


def _cache_config(config: Path, tmp: Path, store: str) -> Path:
    text = config.read_text().replace("response: {enabled: false}", "response: {enabled: true, ttl_s: 600}")
    if store == "redis":  # (the bench config's memory storage goes: beside redis_url it is a config error)
        text = text.replace("storage: {backend: memory}\n", "")
        text = f"redis_url: redis://127.0.0.1:6379/0\nredis_prefix: bench-{uuid.uuid4().hex[:8]}\n" + text
    path = tmp / f"gateway-cache-{store}.yaml"
    path.write_text(text)
    return path


def _open(url: str, body: Any, duration: float, warm: float) -> dict[str, Any]:
    return loadgen.open_loop(url, body, RATE, duration, warm)


def _prefix_lookup(redis: bool, rounds: int = 200) -> dict[str, float]:
    from gateway.cache.prefix_blocks import prompt_blocks
    from gateway.cache.prefix_hasher import BlockHasher
    from gateway.cache.prefix_index import MemoryPrefixIndex, RedisPrefixIndex
    from gateway.tokens.counter import TokenCounter

    counter = TokenCounter()
    turn = "The quarterly report covers revenue, churn, hiring and the product roadmap in detail. "
    messages = [{"role": "system", "content": turn * 200}]  # ~3,200 tokens, then 40 turns of ~730
    messages += [{"role": "user" if i % 2 else "assistant", "content": f"{i}: " + turn * 45} for i in range(40)]
    body = {"messages": messages}
    t0 = time.perf_counter()
    blocks = prompt_blocks(counter, body, "o200k_base")  # first sight: tokenised (then memoised) once
    first_ms = (time.perf_counter() - t0) * 1000
    models = [f"m{i}" for i in range(15)]

    async def timed(index: Any, hasher: Any) -> float:
        await index.record(models[3], blocks.hashes, b"", 300)
        times = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            laid = hasher(body)
            await index.lookup(models, laid.hashes, laid.stable_hash)
            times.append(time.perf_counter() - t0)
        return statistics.median(times) * 1000

    memo = BlockHasher(counter)

    def memoised(body: Any) -> Any:
        return memo.blocks(body, "o200k_base")

    def unmemoised(body: Any) -> Any:
        return prompt_blocks(counter, body, "o200k_base")

    out = {"prompt_tokens": float(blocks.tokens), "blocks": float(len(blocks.hashes)), "first_sight_ms": first_ms,
           "memory_ms": asyncio.run(timed(MemoryPrefixIndex(200_000), memoised)),
           "memory_unmemoised_ms": asyncio.run(timed(MemoryPrefixIndex(200_000), unmemoised))}
    if redis:
        import redis.asyncio as aioredis

        async def with_redis() -> float:
            client = aioredis.from_url("redis://127.0.0.1:6379/0")
            try:
                return await timed(RedisPrefixIndex(client, f"bench-{uuid.uuid4().hex[:8]}", 200_000), memoised)
            finally:
                await client.aclose()

        out["redis_ms"] = asyncio.run(with_redis())
    return out


def caching(run: Any, ps: Procs, tmp: Path, config: Path, main_url: str, args: Any,
            log: Callable[[str], None]) -> dict[str, Any]:
    stores = ["memory"] + (["redis"] if _redis_up() else [])
    res: dict[str, Any] = {"stores": stores}
    counter = itertools.count()
    # The floor: the same load generator straight to the fake upstream answering at once.
    floor = run.measure("cache floor: direct, 0 ms upstream, 200/s", "direct",
                        lambda: _open(run.urls["direct"], loadgen.chat_body("bench-fast"), args.duration, args.warmup))
    res["floor_latency_ms"] = floor["latency_ms"]
    for store in stores:
        gw = ps.start_gateway(_cache_config(config, tmp, store))
        url = gw.url + CHAT_PATH
        same = _body(0, f"hit-{store}")
        hit = run.measure(f"cache hit {store} 200/s", "gateway",
                          lambda url=url, same=same: _open(url, same, args.duration, args.warmup))
        # The same hits from wrk (C client), one connection, back to back: the gateway's own time
        # to answer a hit, without the Python load generator's overhead and idle wake-ups. A first
        # wrk run is a warm-up (the first seconds at ~10x the rate so far have a one-time tail);
        # it is reported too, as `hit_wrk_first_ms`.
        first = run_wrk(url, SLOW, 1, max(3.0, args.warmup), threads=1, deterministic=True).as_dict()
        wrk_hit = run.measure(f"cache hit {store} wrk c=1", "gateway", lambda url=url: run_wrk(
            url, SLOW, 1, args.duration, threads=1, deterministic=True).as_dict())
        misses: dict[str, list[float]] = {"off": [], "on": []}
        for _ in range(2):
            for mode, target in (("off", main_url), ("on", url)):
                tag = f"miss-{store}-{mode}-{next(counter)}"
                r = run.measure(f"cache miss {store} {mode} 200/s", "gateway",
                                lambda t=target, tag=tag: _open(t, lambda i, tag=tag: _body(i, tag),
                                                                args.duration, args.warmup))
                misses[mode].append(r["latency_ms"]["p50"])
        res[store] = {"hit_latency_ms": hit["latency_ms"], "miss_p50_ms": misses,
                      "hit_wrk_ms": {"p50": wrk_hit["lat_p50_ms"], "p99": wrk_hit["lat_p99_ms"], "rps": wrk_hit["rps"]},
                      "hit_wrk_first_ms": {"p50": first["lat_p50_ms"], "p99": first["lat_p99_ms"]},
                      "miss_p50_added_ms": statistics.mean(misses["on"]) - statistics.mean(misses["off"])}
        gw.stop()
    log("prefix lookup, 32k-token prompt, 15 models")
    res["prefix"] = _prefix_lookup("redis" in stores)
    return res


def figures(res: dict[str, Any]) -> dict[str, float]:
    c = res.get("cache") or {}
    if not c:
        return {}
    stores = c["stores"]
    return {
        "cache_hit_p99_ms": max(c[s]["hit_wrk_ms"]["p99"] for s in stores),
        "cache_miss_p50_added_ms": max(c[s]["miss_p50_added_ms"] for s in stores),
        "prefix_lookup_32k_ms": max(c["prefix"].get("redis_ms", 0.0), c["prefix"]["memory_ms"]),
    }


def rows(c: dict[str, Any], verdict: Callable[[str], list[str]]) -> list[list[str]]:
    out = [["Caching: response cache (store), prefix index; 50 ms upstream, 200 req/s", "", "", "", "", ""]]
    floor = c["floor_latency_ms"]
    out.append(["  Floor: direct to the fake upstream, 0 ms, p50/p99 (ms)", f"{floor['p50']:.2f}/{floor['p99']:.2f}",
                "", "", "", ""])
    for s in c["stores"]:
        lat = c[s]["hit_latency_ms"]
        out.append([f"  Response-cache hit p50/p99, {s}, open loop (ms)", "", f"{lat['p50']:.2f}/{lat['p99']:.2f}",
                    "", "", ""])
        w = c[s]["hit_wrk_ms"]
        out.append([f"  Response-cache hit p50/p99, {s}, wrk c=1 (ms; {w['rps']:,.0f} hits/s)", "",
                     f"{w['p50']:.2f}/{w['p99']:.2f}", "", "", ""])
        f = c[s].get("hit_wrk_first_ms")
        if f:
            out.append([f"    its warm-up run just before, {s}, first seconds at that rate (ms)", "",
                        f"{f['p50']:.2f}/{f['p99']:.2f}", "", "", ""])
        m = c[s]["miss_p50_ms"]
        out.append([f"  Miss p50 cache off -> on, {s} (ms)", f"{statistics.mean(m['off']):.2f}",
                    f"{statistics.mean(m['on']):.2f}", f"{c[s]['miss_p50_added_ms']:+.3f}", "", ""])
    p = c["prefix"]
    out.append([f"  Prefix lookup, {p['prompt_tokens']:.0f}-token prompt, {p['blocks']:.0f} blocks, 15 models (ms)",
                "", f"memory {p['memory_ms']:.3f}" + (f", redis {p['redis_ms']:.3f}" if "redis_ms" in p else ""),
                "", "", ""])
    out.append(["    same without the block memo / first sight (tokenising) (ms)", "",
                f"{p['memory_unmemoised_ms']:.3f} / {p['first_sight_ms']:.1f}", "", "", ""])
    out.append(["  worst: hit p99, wrk c=1 (ms)", "", "", "", *verdict("cache_hit_p99_ms")])
    out.append(["  worst: miss p50 added (ms)", "", "", "", *verdict("cache_miss_p50_added_ms")])
    out.append(["  worst: prefix lookup 32k (ms)", "", "", "", *verdict("prefix_lookup_32k_ms")])
    return out
