"""Benchmark the gateway against the fake upstream: direct vs through the gateway, in one run.

    python bench/run.py [--quick] [--duration S] [--out bench/results/latest.json]

See bench/README.md for what each figure means and how it is measured.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import loadgen
import procs
from procs import CHAT_PATH, BenchError, Procs
from report import check_targets, render
from wrkrun import WrkResult, run_wrk

T = TypeVar("T")
FAST, SLOW, STREAM = "bench-fast", "bench-slow", "bench-stream"
SCRIPT = {FAST: {}, SLOW: {"latency_ms": 50}, STREAM: {"output_tokens": 50, "ttft_ms": 0, "itl_ms": 0}}
CONFIG_TEMPLATE = """\
# written by bench/run.py; the response cache is off so identical bench requests all reach upstream
cache:
  response: {{enabled: false}}
models:
{models}"""
MODEL_TEMPLATE = """\
  - name: {name}
    provider: openai
    upstream_model: {name}
    api_base: {base}/v1
    api_key: sk-bench
    pricing: {{input_per_mtok: 0.15, output_per_mtok: 0.6}}
"""


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Meter:
    """CPU of named pids, of this process (+ reaped children such as wrk) and of the whole machine."""

    def __init__(self, pids: dict[str, tuple[int, bool]]) -> None:
        self.pids = pids
        self.cpu: dict[str, float] = {}
        self.util: dict[str, float] = {}

    def _read(self) -> dict[str, float]:
        t = os.times()
        vals = {n: procs.cpu_seconds(pid, kids) for n, (pid, kids) in self.pids.items()}
        vals["client"] = t.user + t.system + t.children_user + t.children_system
        return vals

    def __enter__(self) -> Meter:
        self._t0, self._m0, self._c0 = time.perf_counter(), procs.machine_ticks(), self._read()
        return self

    def __exit__(self, *exc: object) -> None:
        wall = time.perf_counter() - self._t0
        c1, (busy1, total1) = self._read(), procs.machine_ticks()
        self.cpu = {n: c1[n] - self._c0[n] for n in c1}
        self.util = {n: v / wall for n, v in self.cpu.items()}
        busy0, total0 = self._m0
        self.util["machine_busy_cores"] = (busy1 - busy0) / max(total1 - total0, 1) * (os.cpu_count() or 1)


def both(label: str, urls: dict[str, str], fn: Callable[[str], T]) -> dict[str, T]:
    out: dict[str, T] = {}
    for target, url in urls.items():
        log(f"{label}: {target}")
        out[target] = fn(url)
    return out


def check_gateway(label: str, errors: int, detail: Any) -> None:
    if errors:
        raise BenchError(f"{label}: {errors} errors through the gateway: {detail}")


def bench(args: argparse.Namespace, ps: Procs, tmp: Path) -> dict[str, Any]:
    d, warm = args.duration, args.warmup
    script = tmp / "script.json"
    script.write_text(json.dumps(SCRIPT))
    up = ps.start_upstream(script)
    config = tmp / "gateway.yaml"
    models = "".join(MODEL_TEMPLATE.format(name=m, base=up.url) for m in SCRIPT)
    config.write_text(CONFIG_TEMPLATE.format(models=models))
    gw = ps.start_gateway(config, workers=args.workers)
    log(f"fake upstream pid {up.pid} on {up.url}; gateway pid {gw.pid} on {gw.url} ({args.workers} worker)")
    urls = {"direct": up.url + CHAT_PATH, "gateway": gw.url + CHAT_PATH}
    for model in SCRIPT:
        for target, port in (("direct", up.port), ("gateway", gw.port)):
            status = procs.http_status(port, "POST", CHAT_PATH, loadgen.chat_body(model))
            if status != 200:
                raise BenchError(f"sanity request {model} -> {target} returned {status}:\n{gw.log_tail()}")
    pids = {"gateway": (gw.pid, args.workers > 1), "upstream": (up.pid, False)}
    util: dict[str, dict[str, float]] = {}
    res: dict[str, Any] = {"utilisation": util}

    # 1 + 2: max RPS with wrk, CPU per request at c=64
    for url in urls.values():
        run_wrk(url, FAST, 16, max(1.0, warm))  # warm-up, discarded
    rps: dict[str, dict[str, Any]] = {}
    cpu_s: dict[str, dict[str, float]] = {}
    for conns in (16, 64):
        rps[str(conns)] = {}
        for target, url in urls.items():
            log(f"wrk -t2 -c{conns} -d{round(d)}s: {target}")
            with Meter(pids) as m:
                r: WrkResult = run_wrk(url, FAST, conns, d)
            rps[str(conns)][target] = {**r.as_dict(), "errors": r.errors}
            util[f"wrk c={conns} {target}"] = m.util
            if conns == 64:
                cpu_s[target] = {**m.cpu, "requests": r.requests}
            if target == "gateway":
                check_gateway(f"wrk c={conns}", r.errors, r.as_dict())
            elif r.errors:
                log(f"WARNING: {r.errors} errors talking directly to the fake upstream: {r.as_dict()}")
    res["rps"] = rps
    per_req = {t: 1000.0 * c.get("gateway", 0.0) / max(c["requests"], 1) for t, c in cpu_s.items()}
    res["cpu"] = {
        "gateway_ms_per_req": per_req["gateway"],
        "upstream_ms_per_req_direct": 1000.0 * cpu_s["direct"]["upstream"] / max(cpu_s["direct"]["requests"], 1),
        "upstream_ms_per_req_via_gateway": 1000.0 * cpu_s["gateway"]["upstream"]
        / max(cpu_s["gateway"]["requests"], 1),
        "raw": cpu_s,
    }

    # 3: open-loop latency with a 50 ms upstream
    latency: dict[str, Any] = {}
    for rate in args.rates:
        body = loadgen.chat_body(SLOW)

        def open_run(url: str, rate: float = rate, body: bytes = body, name: str = f"{rate:g}") -> dict[str, Any]:
            with Meter(pids) as m:
                out = loadgen.open_loop(url, body, rate, d, warm)
            util[f"open loop {name}/s {'gateway' if url == urls['gateway'] else 'direct'}"] = m.util
            return out

        latency[f"{rate:g}"] = lat = both(f"open loop {rate:g} req/s, 50 ms upstream", urls, open_run)
        check_gateway(f"open loop {rate:g}/s", lat["gateway"]["errors"], lat["gateway"]["error_examples"])
    res["latency"] = latency

    # 4: streaming, 50 tokens
    sbody = loadgen.chat_body(STREAM, stream=True)

    def closed_run(url: str) -> dict[str, Any]:
        with Meter(pids) as m:
            out = loadgen.closed_loop_streams(url, sbody, args.stream_concurrency, d, warm)
        util[f"streams c={args.stream_concurrency} {'gateway' if url == urls['gateway'] else 'direct'}"] = m.util
        return out

    closed = both(f"closed-loop streams c={args.stream_concurrency}", urls, closed_run)
    check_gateway("closed-loop streams", closed["gateway"]["errors"], closed["gateway"]["error_examples"])
    ttfb = both(f"open-loop TTFB {args.stream_rate:g} streams/s", urls,
                lambda url: loadgen.open_loop(url, sbody, args.stream_rate, d, warm, stream=True))
    check_gateway("open-loop TTFB", ttfb["gateway"]["errors"], ttfb["gateway"]["error_examples"])
    res["stream"] = {"closed": closed, "ttfb": ttfb}

    # 6 (before 5, so that cold-start processes cannot disturb it): memory after all load phases
    res["rss"] = procs.memory_mb(gw.pid)
    # 5: cold start
    runs = []
    for i in range(args.cold_runs):
        runs.append(procs.cold_start(ps, config, loadgen.chat_body(FAST)))
        log(f"cold start {i + 1}/{args.cold_runs}: {runs[-1]:.3f} s")
    res["cold_start"] = {"runs_s": runs, "median_s": statistics.median(runs)}
    return res


def figures(res: dict[str, Any]) -> dict[str, float]:
    lat = res["latency"].get("200")
    ttfb = res["stream"]["ttfb"]
    out = {
        "rps_c64_gateway": res["rps"]["64"]["gateway"]["rps"],
        "cpu_ms_per_req_gateway": res["cpu"]["gateway_ms_per_req"],
        "streams_per_s_gateway": res["stream"]["closed"]["gateway"]["streams_per_s"],
        "ttfb_overhead_p50_ms": ttfb["gateway"]["ttfb_ms"]["p50"] - ttfb["direct"]["ttfb_ms"]["p50"],
        "cold_start_s": res["cold_start"]["median_s"],
        "rss_mb": res["rss"]["VmRSS"],
    }
    for q in ("p50", "p99"):
        out[f"overhead_{q}_ms_200"] = (
            lat["gateway"]["latency_ms"][q] - lat["direct"]["latency_ms"][q] if lat else math.nan
        )
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="short phases (~2 s each); whole run < 60 s")
    p.add_argument("--duration", type=float, help="seconds per measured phase (default 15; 2 with --quick)")
    p.add_argument("--warmup", type=float, help="warm-up seconds per phase, discarded (default 1; 0.5 quick)")
    p.add_argument("--out", default="bench/results/latest.json", help="JSON results path")
    p.add_argument("--rates", default="200,50", help="open-loop rates in req/s (comma separated)")
    p.add_argument("--stream-rate", type=float, default=50.0, help="open-loop streams/s for TTFB")
    p.add_argument("--stream-concurrency", type=int, default=16)
    p.add_argument("--workers", type=int, default=1, help="gateway workers (CPU then includes children)")
    p.add_argument("--cold-runs", type=int, default=3)
    args = p.parse_args(argv)
    args.duration = args.duration or (2.0 if args.quick else 15.0)
    args.warmup = args.warmup if args.warmup is not None else (0.5 if args.quick else 1.0)
    args.rates = [float(r) for r in str(args.rates).split(",") if r.strip()]
    return args


def _clean(obj: Any) -> Any:
    """JSON-safe copy: NaN/inf become null."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _sigterm)
    tmp = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    ps = Procs(tmp)
    started = time.perf_counter()
    try:
        res = bench(args, ps, tmp)
    except BenchError as exc:
        print(f"\n*** BENCHMARK FAILED ***\n{exc}", file=sys.stderr)
        for p in ps.started:
            print(f"--- {p.name} log tail ---\n{p.log_tail()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted; stopping processes", file=sys.stderr)
        return 130
    finally:
        ps.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    res["targets"] = check_targets(figures(res))
    res["meta"] = {
        "cpus": os.cpu_count(), "duration_s": args.duration, "warmup_s": args.warmup, "quick": args.quick,
        "gateway_workers": args.workers, "python": sys.version.split()[0], "elapsed_s": time.perf_counter() - started,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(_clean(res), indent=2, allow_nan=False) + "\n")
    print("\n" + render(res))
    print(f"\nJSON written to {out}; total {res['meta']['elapsed_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
