"""Benchmark the gateway against the fake upstream: direct vs through the gateway, in one run.

    python bench/run.py [--quick] [--duration S] [--out bench/results/latest.json]

See bench/README.md for what each figure means and how it is measured.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from types import MappingProxyType
from typing import Any

import loadgen
import procs
import routecat
from accessphase import access
from cachephase import caching
from meter import CPUS, Meter, idle_check, wait_idle
from procs import CHAT_PATH, BenchError, Procs
from report import check_targets, figures, json_safe, render, warnings_for
from routephase import routing
from wrkrun import run_wrk

FAST, SLOW, STREAM = "bench-fast", "bench-slow", "bench-stream"
SCRIPT = MappingProxyType(
    {FAST: {}, SLOW: {"latency_ms": 50}, STREAM: {"output_tokens": 50, "ttft_ms": 0, "itl_ms": 0}}
)
CONFIG_TEMPLATE = """\
# written by bench/run.py; the response cache is off so identical bench requests all reach upstream;
# keys and the ledger in memory (the figures in bench/README.md were measured so)
storage: {{backend: memory}}
cache:
  response: {{enabled: false}}
models:
{models}{tiers}"""
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


class Runner:
    """Runs each measurement against both targets (direct first, then gateway) under a CPU Meter."""

    def __init__(self, urls: dict[str, str], pids: dict[str, tuple[int, bool]], wait: float = 0.0) -> None:
        self.urls = urls
        self.wait = wait
        self.pids = pids
        self.util: dict[str, dict[str, float]] = {}
        self.cpu: dict[str, dict[str, float]] = {}

    def idle(self) -> None:
        """With --wait-idle: wait for other processes on the machine to quieten down."""
        if self.wait > 0:
            busy = wait_idle(self.wait)
            if busy > 0.25:
                log(f"machine still busy ({busy:.2f} cores) after waiting {self.wait:g} s; measuring anyway")

    def measure(self, label: str, target: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """One run under a Meter, recorded as ``label``; errors through the gateway abort the benchmark."""
        log(label)
        with Meter(self.pids) as m:
            out = fn()
        self.util[label] = m.util
        self.cpu[label] = m.cpu
        if out.get("errors"):
            if target == "gateway":
                raise BenchError(f"{label}: {out['errors']} errors through the gateway: {out}")
            log(f"WARNING: {label}: {out['errors']} errors talking directly to the fake upstream")
        return out

    def both(self, label: str, fn: Callable[[str], dict[str, Any]]) -> dict[str, dict[str, Any]]:
        self.idle()
        return {t: self.measure(f"{label} {t}", t, partial(fn, url)) for t, url in self.urls.items()}


def start(args: argparse.Namespace, ps: Procs, tmp: Path) -> tuple[Runner, procs.Proc, procs.Proc, Path]:
    """Start the fake upstream and the gateway, check each model answers, return a Runner for both."""
    script = tmp / "script.json"
    script.write_text(json.dumps({**SCRIPT, **{m[0]: {} for m in routecat.CATALOG}}))
    up = ps.start_upstream(script)
    config = tmp / "gateway.yaml"
    models = "".join(MODEL_TEMPLATE.format(name=m, base=up.url) for m in SCRIPT) + routecat.models_yaml(up.url)
    config.write_text(CONFIG_TEMPLATE.format(models=models, tiers=routecat.TIERS_YAML))
    gw = ps.start_gateway(config, workers=args.workers)
    log(f"fake upstream pid {up.pid} on {up.url}; gateway pid {gw.pid} on {gw.url} ({args.workers} worker(s))")
    for model in SCRIPT:
        for target, port in (("direct", up.port), ("gateway", gw.port)):
            status = procs.http_status(port, "POST", CHAT_PATH, loadgen.chat_body(model, stream=model == STREAM))
            if status != 200:
                raise BenchError(f"sanity request {model} -> {target} returned {status}")
    urls = {"direct": up.url + CHAT_PATH, "gateway": gw.url + CHAT_PATH}
    pids = {"gateway": (gw.pid, args.workers > 1), "upstream": (up.pid, False)}
    return Runner(urls, pids, args.wait_idle), gw, up, config


def wrk_dict(url: str, model: str, connections: int, duration: float, stream: bool = False) -> dict[str, Any]:
    return run_wrk(url, model, connections, duration, stream=stream).as_dict()


def rps_and_cpu(run: Runner, d: float, warm: float) -> dict[str, Any]:
    """1 + 2: max RPS with wrk (non-streaming, 0 ms upstream); CPU per request from the c=64 runs."""
    for url in run.urls.values():
        run_wrk(url, FAST, 16, max(1.0, warm))  # warm-up, discarded
    rps = {str(c): run.both(f"wrk c={c}", partial(wrk_dict, model=FAST, connections=c, duration=d)) for c in (16, 64)}
    cpu = {t: run.cpu[f"wrk c=64 {t}"] for t in run.urls}
    reqs = {t: max(rps["64"][t]["requests"], 1) for t in run.urls}
    return {
        "rps": rps,
        "cpu": {
            "gateway_ms_per_req": 1000.0 * cpu["gateway"]["gateway"] / reqs["gateway"],
            "upstream_ms_per_req_direct": 1000.0 * cpu["direct"]["upstream"] / reqs["direct"],
            "upstream_ms_per_req_via_gateway": 1000.0 * cpu["gateway"]["upstream"] / reqs["gateway"],
            "requests": reqs,
        },
    }


def streaming(run: Runner, args: argparse.Namespace) -> dict[str, Any]:
    """4: 50-token streams: (a) closed-loop streams/s (+ a wrk cross-check), (b) open-loop TTFB."""
    d, warm = args.duration, args.warmup
    body, conc = loadgen.chat_body(STREAM, stream=True), args.stream_concurrency
    closed = run.both(f"streams c={conc}", lambda url: loadgen.closed_loop_streams(url, body, conc, d, warm))
    wrk_d = max(2.0, d / 3)
    wrk = run.both(
        f"wrk streams c={conc}", partial(wrk_dict, model=STREAM, connections=conc, duration=wrk_d, stream=True)
    )
    ttfb = run.both(
        f"TTFB {args.stream_rate:g}/s",
        lambda url: loadgen.open_loop(url, body, args.stream_rate, d, warm, stream=True),
    )
    return {"closed": closed, "wrk": wrk, "ttfb": ttfb}


def bench(args: argparse.Namespace, ps: Procs, tmp: Path) -> dict[str, Any]:
    d, warm = args.duration, args.warmup
    run, gw, up, config = start(args, ps, tmp)
    res: dict[str, Any] = {"utilisation": run.util, **rps_and_cpu(run, d, warm)}
    # 3: open-loop latency at fixed offered rates, 50 ms upstream
    slow = loadgen.chat_body(SLOW)
    res["latency"] = {
        f"{rate:g}": run.both(
            f"open loop {rate:g}/s", partial(loadgen.open_loop, body=slow, rate=rate, duration=d, warmup=warm)
        )
        for rate in args.rates
    }
    res["stream"] = streaming(run, args)
    # 6 (before 5 and 7, as before 7 existed, so that the figure stays comparable): memory after load
    res["rss"] = procs.memory_mb(gw.pid)
    # 7: routing, by name vs by tier on the gateway; memory again after it
    res["routing"] = routing(run, gw, up, args, log)
    res["routing"]["rss_after"] = procs.memory_mb(gw.pid)
    # 8: caching (response cache hit/miss on extra gateways; prefix lookup in-process)
    res["cache"] = caching(run, ps, tmp, config, run.urls["gateway"], args, log)
    # 9: virtual keys (auth, rate limit, budget hold and settle) on Redis
    res["access"] = access(run, ps, tmp, config, args, log)
    # 5: cold start to first 200
    runs = []
    for i in range(args.cold_runs):
        runs.append(procs.cold_start(ps, config, loadgen.chat_body(FAST)))
        log(f"cold start {i + 1}/{args.cold_runs}: {runs[-1]:.3f} s")
    res["cold_start"] = {"runs_s": runs, "median_s": statistics.median(runs)}
    return res


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="short phases (~2 s each); whole run < 60 s")
    p.add_argument("--duration", type=float, help="seconds per measured phase (default 15; 2 with --quick)")
    p.add_argument("--warmup", type=float, help="warm-up seconds per phase, discarded (default 1; 0.5 quick)")
    p.add_argument("--out", default="bench/results/latest.json", help="JSON results path")
    p.add_argument("--rates", default="200,50", help="open-loop rates in req/s, comma separated")
    p.add_argument("--stream-rate", type=float, default=50.0, help="open-loop streams/s for TTFB")
    p.add_argument("--stream-concurrency", type=int, default=16)
    p.add_argument("--workers", type=int, default=1, help="gateway workers (CPU then includes children)")
    p.add_argument("--cold-runs", type=int, default=3)
    p.add_argument("--route-rounds", type=int, help="routing phase: wrk runs per mode (default 5; 2 quick)")
    p.add_argument("--route-rate", type=float, default=200.0, help="routing phase: open-loop req/s")
    p.add_argument("--wait-idle", type=float, default=0.0, metavar="S",
                   help="before each phase wait up to S s for other processes to use < 0.25 cores")
    args = p.parse_args(argv)
    args.duration = args.duration or (2.0 if args.quick else 15.0)
    args.warmup = args.warmup if args.warmup is not None else (0.5 if args.quick else 1.0)
    args.rates = [float(r) for r in str(args.rates).split(",") if r.strip()]
    args.route_rounds = args.route_rounds or (2 if args.quick else 5)
    return args


def _sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _sigterm)
    started = time.perf_counter()
    idle = idle_check()
    note = "  <-- NOT IDLE: other processes are running, expect noisy figures" if idle > 0.2 else ""
    log(f"machine busy before start: {idle:.2f} of {CPUS} cores{note}")
    tmp = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    ps = Procs(tmp)
    try:
        res = bench(args, ps, tmp)
    except BenchError as exc:
        print(f"\n*** BENCHMARK FAILED ***\n{exc}", file=sys.stderr)
        for p in ps.started:
            print(f"--- {p.name} (pid {p.pid}) log tail ---\n{p.log_tail()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted; stopping processes", file=sys.stderr)
        return 130
    finally:
        ps.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    res["targets"] = check_targets(figures(res))
    res["meta"] = {
        "cpus": CPUS, "duration_s": args.duration, "warmup_s": args.warmup, "quick": args.quick,
        "gateway_workers": args.workers, "python": sys.version.split()[0], "busy_cores_before_start": idle,
        "elapsed_s": time.perf_counter() - started, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    res["warnings"] = warnings_for(res)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(json_safe(res), indent=2, allow_nan=False) + "\n")
    print("\n" + render(res))
    print(f"\nJSON written to {out}; total {res['meta']['elapsed_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
