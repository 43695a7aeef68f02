"""7: what cost-aware routing costs. The same model is requested by name and through a tier (which
routes to it out of 15 qualifying models of a 20-model catalog), on the gateway only:

(a) max RPS with wrk at c=64, 0 ms upstream, and the gateway's CPU ms/request;
(b) open-loop latency at 200 req/s with the routed candidates' upstream at 50 ms, p50/p99.

Runs alternate (name, tier, tier, name, ...) so that drift on a shared machine hits both alike;
RPS "noise" is the largest spread between runs of the same mode, the yardstick for "no measurable
difference". Latency samples of all runs of a mode are pooled before taking percentiles.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from typing import Any, Protocol

import loadgen
from procs import BenchError
from routecat import QUALIFYING, TIER, check_route, expected_choice, rescript, tier_requests
from wrkrun import run_wrk

MODES = ("name", "tier")
UPSTREAM_50MS = {"latency_ms": 50}


class Measurer(Protocol):
    cpu: dict[str, dict[str, float]]

    def idle(self) -> None: ...
    def measure(self, label: str, target: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]: ...


def _rounds(n: int) -> Iterator[tuple[int, tuple[str, str]]]:
    for i in range(n):
        yield i + 1, (MODES if i % 2 == 0 else MODES[::-1])


def _spread_pct(values: list[float]) -> float:
    mean = sum(values) / len(values)
    return 100.0 * (max(values) - min(values)) / mean if len(values) > 1 and mean else 0.0


def _wrk(url: str, model: str, duration: float) -> dict[str, Any]:
    return run_wrk(url, model, 64, duration).as_dict()


def max_rps(run: Measurer, url: str, model: str, duration: float, warm: float, rounds: int) -> dict[str, Any]:
    ask = {"name": model, "tier": TIER}
    for m in ask.values():
        run_wrk(url, m, 16, max(1.0, warm))  # warm-up, discarded
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
    for i, order in _rounds(rounds):
        run.idle()
        for mode in order:
            label = f"routing wrk c=64 by {mode} #{i}"
            r = run.measure(label, "gateway", partial(_wrk, url, ask[mode], duration))
            r["gateway_cpu_s"] = run.cpu[label]["gateway"]
            runs[mode].append(r)
    out: dict[str, Any] = {"model": model, "connections": 64, "run_s": max(1, round(duration)), "runs": runs}
    for mode, rs in runs.items():
        reqs = sum(r["requests"] for r in rs)
        out[mode] = {
            "rps": reqs / sum(r["duration_s"] for r in rs),
            "runs_rps": [r["rps"] for r in rs],
            "spread_pct": _spread_pct([r["rps"] for r in rs]),
            "cpu_ms_per_req": 1000.0 * sum(r["gateway_cpu_s"] for r in rs) / max(reqs, 1),
            "requests": reqs,
        }
    name, tier = out["name"], out["tier"]
    out["rps_diff_pct"] = 100.0 * (tier["rps"] - name["rps"]) / name["rps"]
    out["pair_diffs_pct"] = [100.0 * (t["rps"] - n["rps"]) / n["rps"] for n, t in zip(*runs.values(), strict=True)]
    out["noise_pct"] = max(name["spread_pct"], tier["spread_pct"])
    out["cpu_diff_ms"] = tier["cpu_ms_per_req"] - name["cpu_ms_per_req"]
    return out


def latency(
    run: Measurer, url: str, model: str, rate: float, duration: float, warm: float, rounds: int
) -> dict[str, Any]:
    bodies = {"name": loadgen.chat_body(model), "tier": loadgen.chat_body(TIER)}
    samples: dict[str, list[float]] = {m: [] for m in MODES}
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
    for i, order in _rounds(rounds):
        run.idle()
        for mode in order:
            label = f"routing open loop {rate:g}/s by {mode} #{i}"
            fn = partial(loadgen.open_loop, url, bodies[mode], rate, duration, warm, keep=True)
            r = run.measure(label, "gateway", fn)
            samples[mode] += r.pop("latencies_s")
            r["gateway_cpu_s"] = run.cpu[label]["gateway"]
            r["requests"] = r["sent"] + int(round(warm * rate))  # the meter also saw the warm-up requests
            runs[mode].append(r)
    out: dict[str, Any] = {"model": model, "rate": rate, "run_s": duration, "runs": runs}
    for mode, rs in runs.items():
        out[mode] = {
            "latency_ms": loadgen.summary_ms(samples[mode]),
            "runs_p50_ms": [r["latency_ms"]["p50"] for r in rs],
            "cpu_ms_per_req": 1000.0 * sum(r["gateway_cpu_s"] for r in rs) / max(sum(r["requests"] for r in rs), 1),
            "send_lateness_p99_ms": max(r["send_lateness_ms"]["p99"] for r in rs),
        }
    name, tier = out["name"], out["tier"]
    for q in ("p50", "p99", "max"):
        out[f"added_{q}_ms"] = tier["latency_ms"][q] - name["latency_ms"][q]
    out["pair_p50_diffs_ms"] = [t - n for n, t in zip(name["runs_p50_ms"], tier["runs_p50_ms"], strict=True)]
    out["p50_noise_ms"] = max(max(v) - min(v) for v in (name["runs_p50_ms"], tier["runs_p50_ms"]))
    out["cpu_diff_ms"] = tier["cpu_ms_per_req"] - name["cpu_ms_per_req"]
    return out


def routing(
    run: Measurer, gw: Any, up: Any, args: Any, log: Callable[[str], None]
) -> dict[str, Any]:
    """The whole phase; ``gw`` / ``up`` are the gateway's and the fake upstream's ``procs.Proc``."""
    url = gw.url + "/v1/chat/completions"
    info = check_route(gw.port, loadgen.chat_body)
    model = info["chosen"]
    log(f"routing: tier {TIER} -> {model} ({info['candidates']} candidates, {info['excluded']} excluded); "
        f"route: {info['route_header']}")
    if model != info["expected"]:
        log(f"WARNING: the tier chose {model}, the catalog was designed for {expected_choice()}")
    # per mode as much run time as phases 1 and 3 give each target, cut into alternating runs
    rounds, lat_rounds = args.route_rounds, min(3, args.route_rounds)
    res: dict[str, Any] = {"catalog": info}
    res["rps"] = max_rps(run, url, model, max(2.0, args.duration / rounds), args.warmup, rounds)
    # (b): every routed candidate's upstream answers after 50 ms, so whichever the tier picks behaves alike
    rescript(up.port, QUALIFYING, UPSTREAM_50MS)
    try:
        if check_route(gw.port, loadgen.chat_body)["chosen"] != model:
            raise BenchError(f"tier {TIER} no longer routes to {model} after re-scripting the upstream")
        res["latency"] = latency(run, url, model, args.route_rate, max(2.0, args.duration / lat_rounds),
                                 args.warmup, lat_rounds)
    finally:
        rescript(up.port, QUALIFYING, {})
    served = tier_requests(gw.port)
    res["served_by_tier"] = served
    if set(served) != {model}:
        raise BenchError(f"requests through tier {TIER} were served by {served}, not only by {model}")
    return res


NOISE_MAX_PCT = 10.0  # a run noisier than this cannot show that a loss is absent


def loss_limit_pct(rps: dict[str, Any]) -> float:
    """How much lower by tier may be and not count as a measurable loss: the noise, unless
    every paired round lost (then the loss is measured: 0) or the run is too noisy to resolve
    a loss of NOISE_MAX_PCT (then only "not lower at all" passes)."""
    if losing_rounds(rps) or rps["noise_pct"] > NOISE_MAX_PCT:
        return 0.0
    return float(rps["noise_pct"])


def losing_rounds(rps: dict[str, Any]) -> bool:
    """Whether by tier lost to by name in every paired round (at least 3): then the loss is
    measured, however small next to the spread of same-mode runs (5 of 5 by chance: 1 in 32)."""
    pairs = rps["pair_diffs_pct"]
    return len(pairs) >= 3 and all(d < 0 for d in pairs)


def figures(res: dict[str, Any]) -> dict[str, float]:
    r = res["routing"]
    return {
        "routing_p50_added_ms": r["latency"]["added_p50_ms"],
        "routing_rps_loss_pct": -r["rps"]["rps_diff_pct"],
        "routing_rps_noise_pct": r["rps"]["noise_pct"],
        "routing_rps_loss_limit_pct": loss_limit_pct(r["rps"]),
    }
