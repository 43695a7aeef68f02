"""Targets and the human-readable tables printed at the end of a run."""

from __future__ import annotations

import math
from typing import Any

from accessphase import figures as access_figures
from accessphase import rows as access_rows
from cachephase import figures as cache_figures
from cachephase import rows as cache_rows
from routephase import NOISE_MAX_PCT, losing_rounds
from routephase import figures as routing_figures

# (key, description, comparison, limit) — checked against the figures computed by run.py; a limit
# given as a string is the name of another figure (measured in the same run).
TARGETS: tuple[tuple[str, str, str, float | str], ...] = (
    ("rps_c64_gateway", ">= 1,500 req/s", ">=", 1500.0),
    ("cpu_ms_per_req_gateway", "<= 0.7 ms", "<=", 0.7),
    ("overhead_p50_ms_200", "<= 1 ms", "<=", 1.0),
    ("overhead_p99_ms_200", "<= 3 ms", "<=", 3.0),
    ("streams_per_s_gateway", ">= 500 /s", ">=", 500.0),
    ("ttfb_overhead_p50_ms", "<= 1 ms", "<=", 1.0),
    ("cold_start_s", "<= 1.5 s", "<=", 1.5),
    ("rss_mb", "<= 120 MB", "<=", 120.0),
    ("routing_p50_added_ms", "<= 0.3 ms", "<=", 0.3),
    ("routing_rps_loss_pct", "no measurable loss", "<=", "routing_rps_loss_limit_pct"),
    ("cache_hit_p99_ms", "<= 2 ms", "<=", 2.0),
    ("cache_miss_p50_added_ms", "<= 0.5 ms", "<=", 0.5),
    ("prefix_lookup_32k_ms", "<= 0.5 ms", "<=", 0.5),
    ("access_p50_added_ms", "<= 1 ms", "<=", 1.0),
)


def figures(res: dict[str, Any]) -> dict[str, float]:
    lat, ttfb = res["latency"].get("200"), res["stream"]["ttfb"]
    out = {
        "rps_c64_gateway": res["rps"]["64"]["gateway"]["rps"],
        "cpu_ms_per_req_gateway": res["cpu"]["gateway_ms_per_req"],
        "streams_per_s_gateway": res["stream"]["closed"]["gateway"]["streams_per_s"],
        "ttfb_overhead_p50_ms": ttfb["gateway"]["ttfb_ms"]["p50"] - ttfb["direct"]["ttfb_ms"]["p50"],
        "cold_start_s": res["cold_start"]["median_s"],
        "rss_mb": res["rss"]["VmRSS"],
        **routing_figures(res),
        **cache_figures(res),
        **access_figures(res),
    }
    for q in ("p50", "p99"):
        out[f"overhead_{q}_ms_200"] = (
            lat["gateway"]["latency_ms"][q] - lat["direct"]["latency_ms"][q] if lat else math.nan
        )
    return out


def json_safe(obj: Any) -> Any:
    """JSON-safe copy: NaN/inf become null."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def check_targets(figures: dict[str, float]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for key, text, op, lim in TARGETS:
        value = figures.get(key, math.nan)
        limit = figures.get(lim, math.nan) if isinstance(lim, str) else lim
        ok = (value >= limit if op == ">=" else value <= limit) if not math.isnan(value + limit) else False
        out[key] = {"value": value, "target": text, "limit": limit, "pass": ok}
    return out


def _f(value: Any, digits: int = 2, sign: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, str):
        return value
    if abs(value) >= 1000:
        return f"{value:+,.0f}" if sign else f"{value:,.0f}"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join("-" * w for w in widths)
    fmt = [("{:<" if i == 0 else "{:>") + str(w) + "}" for i, w in enumerate(widths)]
    out = ["  ".join(f.format(c) for f, c in zip(fmt, header, strict=True)), line]
    out += ["  ".join(f.format(c) for f, c in zip(fmt, r, strict=True)) for r in rows]
    return "\n".join(out)


def render(res: dict[str, Any]) -> str:
    t = res["targets"]

    def verdict(key: str) -> list[str]:
        if key not in t:
            return ["", ""]
        return [t[key]["target"], "PASS" if t[key]["pass"] else "FAIL"]

    rows: list[list[str]] = []
    rps = res["rps"]
    for conns in ("16", "64"):
        r = rps[conns]
        key = "rps_c64_gateway" if conns == "64" else ""
        rows.append([f"Max RPS c={conns} (non-stream, 0 ms upstream)", _f(r["direct"]["rps"], 0),
                     _f(r["gateway"]["rps"], 0), "", *verdict(key)])
    cpu = res["cpu"]
    rows.append(["CPU ms/request at c=64 (gateway process)", "", _f(cpu["gateway_ms_per_req"], 3), "",
                 *verdict("cpu_ms_per_req_gateway")])
    rows.append(["  fake upstream CPU ms/request (reference)", _f(cpu["upstream_ms_per_req_direct"], 3),
                 _f(cpu["upstream_ms_per_req_via_gateway"], 3), "", "", ""])
    for rate, lat in res["latency"].items():
        d, g = lat["direct"]["latency_ms"], lat["gateway"]["latency_ms"]
        for q in ("p50", "p99", "max"):
            key = f"overhead_{q}_ms_{rate}"
            rows.append([f"Latency {q} @ {rate} req/s, 50 ms upstream (ms)", _f(d[q]), _f(g[q]),
                         _f(g[q] - d[q], sign=True), *verdict(key)])
        dl, gl = lat["direct"]["send_lateness_ms"], lat["gateway"]["send_lateness_ms"]
        rows.append([f"  generator send lateness p99 @ {rate} req/s (ms)", _f(dl["p99"]), _f(gl["p99"]), "", "", ""])
    st = res["stream"]
    rows.append([f"Streams/s, 50 tokens, closed loop c={st['closed']['direct']['concurrency']}",
                 _f(st["closed"]["direct"]["streams_per_s"], 0), _f(st["closed"]["gateway"]["streams_per_s"], 0),
                 "", *verdict("streams_per_s_gateway")])
    rows.append([f"  cross-check: wrk streams/s c={st['wrk']['direct']['connections']} (C client)",
                 _f(st["wrk"]["direct"]["rps"], 0), _f(st["wrk"]["gateway"]["rps"], 0), "", "", ""])
    d, g = st["ttfb"]["direct"]["ttfb_ms"], st["ttfb"]["gateway"]["ttfb_ms"]
    rate = st["ttfb"]["direct"]["rate"]
    for q, key in (("p50", "ttfb_overhead_p50_ms"), ("p99", "")):
        rows.append([f"TTFB {q} @ {rate:g} streams/s (ms)", _f(d[q]), _f(g[q]), _f(g[q] - d[q], sign=True),
                     *verdict(key)])
    cs = res["cold_start"]
    runs = ", ".join(f"{v:.2f}" for v in cs["runs_s"])
    rows.append([f"Cold start to first 200, median of {len(cs['runs_s'])} (s) [{runs}]", "", _f(cs["median_s"]), "",
                 *verdict("cold_start_s")])
    mem = res["rss"]
    rows.append(["Gateway RSS after load, VmRSS / VmHWM (MB)", "",
                 f"{_f(mem['VmRSS'], 1)} / {_f(mem['VmHWM'], 1)}", "", *verdict("rss_mb")])
    rows += routing_rows(res["routing"], verdict)
    if res.get("cache"):
        rows += cache_rows(res["cache"], verdict)
    if res.get("access"):
        rows += access_rows(res["access"], verdict)
    main = _table(["Figure", "Direct", "Gateway", "Overhead", "Target (gateway)", "Result"], rows)
    text = main + "\n\n" + render_cpu(res)
    if res.get("warnings"):
        text += "\n\nWARNINGS (possible measurement artefacts):\n" + "\n".join(f"  - {w}" for w in res["warnings"])
    return text


def routing_rows(r: dict[str, Any], verdict: Any) -> list[list[str]]:
    """Phase 7 in the main table: its columns are by name | by tier | tier - name (gateway only)."""
    cat, rps, lat = r["catalog"], r["rps"], r["latency"]
    n, t = rps["name"], rps["tier"]
    runs = len(n["runs_rps"])
    rows = [
        [f"Routing, gateway only: {cat['catalog_models']}-model catalog, tier {cat['tier']} "
         f"(min_quality {cat['min_quality']}, {cat['candidates']} candidates) -> {cat['chosen']}",
         "by name", "by tier", "tier-name", "", ""],
        [f"  Max RPS c=64, 0 ms upstream ({runs}+{runs} runs of {rps['run_s']} s, alternating)", _f(n["rps"], 0),
         _f(t["rps"], 0), f"{rps['rps_diff_pct']:+.1f} %", *verdict("routing_rps_loss_pct")],
        ["    per-run RPS / noise = max spread of same-mode runs",
         "/".join(_f(v, 0) for v in n["runs_rps"]), "/".join(_f(v, 0) for v in t["runs_rps"]),
         f"noise {rps['noise_pct']:.1f} %", "", ""],
        ["    per-round tier-name (%), runs adjacent in time", "", "",
         "/".join(f"{v:+.1f}" for v in rps["pair_diffs_pct"]), "", ""],
        ["  CPU ms/request at c=64 (gateway process)", _f(n["cpu_ms_per_req"], 3), _f(t["cpu_ms_per_req"], 3),
         _f(rps["cpu_diff_ms"], 3, sign=True), "", ""],
    ]
    ln, lt = lat["name"], lat["tier"]
    rate = f"{lat['rate']:g}"
    for q, key in (("p50", "routing_p50_added_ms"), ("p99", ""), ("max", "")):
        rows.append([f"  Latency {q} @ {rate} req/s, 50 ms upstream (ms)", _f(ln["latency_ms"][q]),
                     _f(lt["latency_ms"][q]), _f(lat[f"added_{q}_ms"], 3, sign=True), *verdict(key)])
    rows.append(["    per-run p50 (ms) / noise = max spread of same-mode runs",
                 "/".join(_f(v) for v in ln["runs_p50_ms"]), "/".join(_f(v) for v in lt["runs_p50_ms"]),
                 f"noise {lat['p50_noise_ms']:.2f}", "", ""])
    rows.append([f"  CPU ms/request @ {rate} req/s (gateway process)", _f(ln["cpu_ms_per_req"], 3),
                 _f(lt["cpu_ms_per_req"], 3), _f(lat["cpu_diff_ms"], 3, sign=True), "", ""])
    rows.append([f"  generator send lateness p99 @ {rate} req/s (ms)", _f(ln["send_lateness_p99_ms"]),
                 _f(lt["send_lateness_p99_ms"]), "", "", ""])
    if "rss_after" in r:
        mem = r["rss_after"]
        rows.append(["  Gateway RSS after this phase too, VmRSS / VmHWM (MB)", "",
                     f"{_f(mem['VmRSS'], 1)} / {_f(mem['VmHWM'], 1)}", "", "", ""])
    return rows


def render_cpu(res: dict[str, Any]) -> str:
    """Where the machine's CPU went in each phase, in cores (1.00 = one core fully busy)."""
    rows = []
    for name, u in res["utilisation"].items():
        rows.append([name, *(_f(u.get(k)) for k in ("gateway", "upstream", "client", "other", "machine"))])
    header = ["Phase: CPU in cores", "gateway", "fake upstream", "load gen (+wrk)", "other procs",
              f"machine (of {res['meta']['cpus']})"]
    return _table(header, rows)


def warnings_for(res: dict[str, Any]) -> list[str]:
    """Signs that a figure measures the machine or the load generator rather than the gateway."""
    out: list[str] = []
    cpus = res["meta"]["cpus"]
    for name, u in res["utilisation"].items():
        if u.get("other", 0.0) > 0.25:
            out.append(f"{name}: processes outside the benchmark used {u['other']:.2f} cores")
        if u.get("client", 0.0) > 0.85:
            out.append(f"{name}: the load generator used {u['client']:.2f} cores (may be the bottleneck)")
        through_gw = name.endswith("gateway") or name.startswith("routing ")
        if through_gw and u.get("machine", 0.0) > 0.95 * cpus and u.get("gateway", 0.0) < 0.9:
            out.append(f"{name}: machine saturated while the gateway got only {u['gateway']:.2f} cores")
    for rate, lat in [*res["latency"].items(), ("TTFB " + str(res["stream"]["ttfb"]["direct"]["rate"]),
                                                 res["stream"]["ttfb"])]:
        for target, r in lat.items():
            late = r["send_lateness_ms"]["p99"]
            if late > 2.0:
                out.append(f"open loop {rate}/s {target}: generator sent late, p99 {late:.2f} ms after schedule")
    return out + routing_warnings(res["routing"])


def routing_warnings(r: dict[str, Any]) -> list[str]:
    out = []
    cat, rps, lat = r["catalog"], r["rps"], r["latency"]
    if cat["chosen"] != cat["expected"]:
        out.append(f"routing: tier {cat['tier']} chose {cat['chosen']}, the catalog was designed for {cat['expected']}")
    if rps["noise_pct"] > NOISE_MAX_PCT and not losing_rounds(rps):
        out.append(f"routing: RPS runs of the same mode differ by up to {rps['noise_pct']:.1f} %, more than "
                   f"{NOISE_MAX_PCT:g} %: too noisy to show that no loss exists, so only by tier >= by name passes")
    elif rps["noise_pct"] > 5.0 and not losing_rounds(rps):
        out.append(f"routing: RPS runs of the same mode differ by up to {rps['noise_pct']:.1f} %, "
                   "so smaller RPS differences cannot be resolved")
    for mode in ("name", "tier"):
        late = lat[mode]["send_lateness_p99_ms"]
        if late > 2.0:
            out.append(f"routing open loop by {mode}: generator sent late, p99 {late:.2f} ms after schedule")
    return out
