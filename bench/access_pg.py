"""The keyed request path with PostgreSQL as the system of record, beside the same path on Redis
alone, in one run on one machine (issue 17: the keyed path adds no more than the Redis-only
figure; the settlement and the ledger row are written off the path).

    python bench/access_pg.py [--duration 15] [--warmup 1] [--rounds 3]
                              [--url postgresql://postgres@127.0.0.1:5432/test]
                              [--out bench/results/access_pg.json] [--wait-idle S]

Two gateways on one fake upstream (the bench config of `run.py`), both with `redis_url` on
127.0.0.1:6379 under a fresh private prefix each and the bench master key: *redis* (Redis alone,
as phase 9 of `run.py`) and *pg* (plus `database_url` and `database: {schema_name: <fresh>,
migrate_on_start: true}`; the schema is created here and dropped at the end). Each gets a virtual
key with a budget and RPM/TPM limits. The 50 ms request at 200 req/s, open loop, anonymous and with
the key, ``--rounds`` rounds alternating the modes and the gateways (`accessphase.keyed_rounds`);
per gateway, key - anonymous of the mean p50s and p99s. Afterwards the gateways are stopped (they
write what they hold) and the schema's rows are counted: the key's ledger rows and settled spend.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import loadgen
import routecat
from accessphase import gateway_config, keyed_rounds, new_key
from cachephase import SLOW, _redis_up
from meter import CPUS, idle_check, wait_idle
from procs import CHAT_PATH, BenchError, Proc, Procs
from run import CONFIG_TEMPLATE, MODEL_TEMPLATE, SCRIPT, Runner, _sigterm

TARGET_MS = 0.64  # issue 17: the Redis-only keyed path's p50 added (bench/README.md, History)


def log(msg: str) -> None:
    print(f"[access_pg {time.strftime('%H:%M:%S')}] {msg}", flush=True)


async def _sql(url: str, *statements: str) -> list[Any]:
    conn = await asyncpg.connect(url)
    try:
        return [await conn.fetchval(s) for s in statements]
    finally:
        await conn.close()


def _base_config(ps: Procs, tmp: Path) -> tuple[Path, Proc]:
    """The fake upstream and the bench config, as `run.start` writes them."""
    script = tmp / "script.json"
    script.write_text(json.dumps({**SCRIPT, **{m[0]: {} for m in routecat.CATALOG}}))
    up = ps.start_upstream(script)
    models = "".join(MODEL_TEMPLATE.format(name=m, base=up.url) for m in SCRIPT) + routecat.models_yaml(up.url)
    config = tmp / "gateway.yaml"
    config.write_text(CONFIG_TEMPLATE.format(models=models, tiers=routecat.TIERS_YAML))
    return config, up


def bench(args: argparse.Namespace, ps: Procs, tmp: Path, schema: str) -> dict[str, Any]:
    config, up = _base_config(ps, tmp)
    journals = (f"budgets: {{journal_path: {tmp / 'spend-journal-NAME.jsonl'}}}\n"
                f"ledger: {{journal_path: {tmp / 'ledger-journal-NAME.jsonl'}}}\n")
    pg_extra = (f"database_url: {args.url}\n"
                f"database: {{schema_name: {schema}, migrate_on_start: true}}\n")
    gws = {"redis": ps.start_gateway(gateway_config(config, tmp, "redis", journals.replace("NAME", "redis"))),
           "pg": ps.start_gateway(gateway_config(config, tmp, "pg", pg_extra + journals.replace("NAME", "pg")))}
    keys = {g: new_key(p.url) for g, p in gws.items()}
    for g, p in gws.items():
        for hdr in (None, {"Authorization": f"Bearer {keys[g]}"}):
            r = httpx.post(p.url + CHAT_PATH, content=loadgen.chat_body(SLOW),
                           headers={"Content-Type": "application/json", **(hdr or {})})
            if r.status_code != 200:
                raise BenchError(f"sanity request to {g} ({'key' if hdr else 'anonymous'}) returned {r.status_code}")
    log(f"fake upstream pid {up.pid}; gateways: " + ", ".join(f"{g} pid {p.pid} on {p.url}" for g, p in gws.items()))
    pids = {f"gateway-{g}": (p.pid, False) for g, p in gws.items()} | {"upstream": (up.pid, False)}
    run = Runner({}, pids)
    res: dict[str, Any] = {"gateways": keyed_rounds(run, {g: (p.url, keys[g]) for g, p in gws.items()},
                                                   args, args.rounds)}
    for g, p in gws.items():
        spent = httpx.get(f"{p.url}/v1/spend", headers={"Authorization": f"Bearer {keys[g]}"}).json()
        res["gateways"][g]["key_spend_usd"] = spent["spend_usd"]
        p.stop(timeout=20.0)  # SIGTERM: the gateway writes what it holds before it exits
    res["utilisation"] = run.util
    res["pg_rows"] = dict(zip(("ledger", "key_spend", "virtual_keys"), asyncio.run(_sql(
        args.url, f"SELECT count(*) FROM {schema}.ledger", f"SELECT count(*) FROM {schema}.key_spend",
        f"SELECT count(*) FROM {schema}.virtual_keys")), strict=True))
    return res


def render(res: dict[str, Any]) -> str:
    lines = [f"{'50 ms upstream, 200 req/s, open loop':<44}{'anonymous':>11}{'with key':>10}{'added':>9}",
             "-" * 74]
    for g, label in (("redis", "Redis only"), ("pg", "PostgreSQL + Redis")):
        a = res["gateways"][g]
        for pct in ("p50", "p99"):
            runs = a[f"{pct}_ms"]
            lines.append(f"{label + ': latency ' + pct + ' (ms)':<44}{statistics.mean(runs['anonymous']):>11.2f}"
                         f"{statistics.mean(runs['key']):>10.2f}{a[f'{pct}_added_ms']:>+9.3f}")
            lines.append(f"{'  per run, anonymous / key':<28}" + " / ".join(
                ", ".join(f"{v:.2f}" for v in runs[m]) for m in ("anonymous", "key")))
    pg, redis = res["gateways"]["pg"]["p50_added_ms"], res["gateways"]["redis"]["p50_added_ms"]
    lines += ["-" * 74,
              f"PostgreSQL - Redis only, p50 added: {pg - redis:+.3f} ms; "
              f"target: PostgreSQL p50 added <= {TARGET_MS} ms (and <= Redis only in this run, {redis:+.3f} ms)",
              f"rows in the schema afterwards: {res['pg_rows']}"]
    busy = max((u.get("other", 0.0) for u in res["utilisation"].values()), default=0.0)
    if busy > 0.25:
        lines.append(f"WARNING: other processes used up to {busy:.2f} cores during a run")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=15.0, help="seconds per measured run")
    p.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds per run, discarded")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--url", default=os.environ.get("DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/test")
    p.add_argument("--out", default="bench/results/access_pg.json")
    p.add_argument("--wait-idle", type=float, default=0.0, metavar="S",
                   help="before starting, wait up to S s for other processes to use < 0.25 cores")
    args = p.parse_args(argv)
    if not _redis_up():
        print("needs Redis on 127.0.0.1:6379", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, _sigterm)
    started = time.perf_counter()
    if args.wait_idle > 0:
        log(f"waiting up to {args.wait_idle:g} s for the machine to quieten down")
        wait_idle(args.wait_idle)
    idle = idle_check()
    log(f"machine busy before start: {idle:.2f} of {CPUS} cores")
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    asyncio.run(_sql(args.url, f"CREATE SCHEMA {schema}"))
    tmp = Path(tempfile.mkdtemp(prefix="gateway-bench-access-pg-"))
    ps = Procs(tmp)
    try:
        res = bench(args, ps, tmp, schema)
    except BenchError as exc:
        print(f"\n*** BENCHMARK FAILED ***\n{exc}", file=sys.stderr)
        for proc in ps.started:
            print(f"--- {proc.name} (pid {proc.pid}) log tail ---\n{proc.log_tail()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted; stopping processes", file=sys.stderr)
        return 130
    finally:
        ps.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
        asyncio.run(_sql(args.url, f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
    res["meta"] = {"cpus": CPUS, "duration_s": args.duration, "warmup_s": args.warmup, "rounds": args.rounds,
                   "python": sys.version.split()[0], "busy_cores_before_start": idle, "schema": schema,
                   "elapsed_s": time.perf_counter() - started, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    print("\n" + render(res))
    print(f"\nJSON written to {out}; total {res['meta']['elapsed_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
