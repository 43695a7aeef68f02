"""Instructions per request, by name and by tier, counted by `valgrind --tool=callgrind`: repeatable
whatever else the machine is doing (about ±1k per request), where a wall-clock A/B on a shared VM
cannot resolve a few per cent.

    python bench/instructions.py                  # both modes, ~2.5 minutes
    python bench/instructions.py --requests 500   # fewer requests per count
    python bench/instructions.py --apis           # also /v1/messages, /v1/responses, /v1/embeddings

Each count runs the gateway in-process (`GatewayASGI` called with an ASGI scope: no HTTP server
and no client in the count) against the fake upstream in its own process (not counted), with the
routing phase's catalog (`routecat`: 20 models, tier bench-tier with 15 candidates; by name asks
for the model the tier chooses). Per request = (count after 100 + N requests − count after 100)
/ N, so start-up and warm-up cancel out. PYTHONHASHSEED is fixed. Counts differ between
machines (Python build, libraries): compare counts from one machine only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
import routecat
from loadgen import chat_body
from procs import CHAT_PATH, REPO, BenchError, Procs

BASE_REQUESTS = 100
CONFIG = "storage: {{backend: memory}}\ncache:\n  response: {{enabled: false}}\nmodels:\n{models}{embedding}{tiers}"
EMBEDDING = """\
  - name: bench-embed
    provider: openai
    upstream_model: text-embedding-3-small
    api_base: {base}/v1
    api_key: sk-bench
"""
# mode -> the path it posts to (by name, the model the tier chooses; the same prompt in each API's shape)
PATHS = {"name": CHAT_PATH, "tier": CHAT_PATH, "messages": "/v1/messages", "responses": "/v1/responses",
         "embeddings": "/v1/embeddings"}


def _body(mode: str, model: str) -> bytes:
    if mode in ("name", "tier"):
        return chat_body(model)
    if mode == "messages":
        return orjson.dumps({"model": model, "max_tokens": 256, "messages": [{"role": "user", "content": "Say hello"}]})
    if mode == "responses":
        return orjson.dumps({"model": model, "input": "Say hello"})
    return orjson.dumps({"model": "bench-embed", "input": "Say hello"})


def _scope(body: bytes, path: str) -> dict[str, Any]:
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"authorization", b"Bearer x"),
                    (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2),
    }


async def _serve(config: Path, mode: str, model: str, n: int) -> None:
    """Start the app (lifespan), send 20 warm-up requests and then `n`, each answered 200."""
    from gateway.app import create_app, load_settings

    app = create_app(load_settings(config))
    body = _body(mode, model)
    scope = _scope(body, PATHS[mode])
    events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    started = asyncio.Event()
    await events.put({"type": "lifespan.startup"})

    async def lifespan_send(message: dict[str, Any]) -> None:
        if message["type"] == "lifespan.startup.complete":
            started.set()

    lifespan = asyncio.create_task(app.api({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}},
                                           events.get, lifespan_send))
    await started.wait()
    await asyncio.sleep(1.0)  # the warm-up thread loads the encodings
    statuses: list[int] = []

    async def one() -> None:
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                await asyncio.Event().wait()  # the client never disconnects
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        await app(dict(scope), receive, send)

    for _ in range(20 + n):
        await one()
    await events.put({"type": "lifespan.shutdown"})
    await lifespan
    if set(statuses) != {200}:
        raise BenchError(f"{model}: statuses {sorted(set(statuses))}")


def drive(mode: str, n: int) -> None:
    """The process valgrind counts: `n` requests by `mode` (name | tier)."""
    with tempfile.TemporaryDirectory() as tmp:
        ps = Procs(Path(tmp))
        try:
            script = Path(tmp) / "script.json"
            script.write_text(json.dumps({m[0]: {} for m in routecat.CATALOG}))
            up = ps.start_upstream(script)
            config = Path(tmp) / "gateway.yaml"
            config.write_text(CONFIG.format(models=routecat.models_yaml(up.url),
                                            embedding=EMBEDDING.format(base=up.url), tiers=routecat.TIERS_YAML))
            model = routecat.TIER if mode == "tier" else routecat.expected_choice()
            asyncio.run(_serve(config, mode, model, n))
        finally:
            ps.stop_all()


def count(mode: str, n: int, tmp: Path) -> int:
    """Instructions of one process that serves `n` requests by `mode`."""
    out = tmp / f"callgrind.{mode}.{n}"
    env = {**os.environ, "PYTHONHASHSEED": "0", "PYTHONPATH": str(REPO)}
    args = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, __file__,
            "--drive", mode, str(n)]
    done = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    found = re.search(r"^totals:\s+(\d+)", out.read_text() if out.exists() else "", re.M)
    if done.returncode != 0 or found is None:
        raise BenchError(f"callgrind {mode} {n}: exit {done.returncode}\n{done.stderr[-2000:]}")
    return int(found.group(1))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=2000, help="requests per count, on top of the base 100")
    p.add_argument("--apis", action="store_true", help="also count the other client APIs (by name)")
    p.add_argument("--drive", nargs=2, metavar=("MODE", "N"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.drive:
        drive(args.drive[0], int(args.drive[1]))
        return 0
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (apt-get install valgrind)", file=sys.stderr)
        return 1
    n = args.requests
    modes = ("name", "tier", *(("messages", "responses", "embeddings") if args.apis else ()))
    # One count at a time: the counts depend a little on timing (how often the event loop wakes
    # up before the upstream's answer is complete), so a loaded machine counts more.
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(1) as pool:
        runs = {(m, k): pool.submit(count, m, k, Path(tmp))
                for m in modes for k in (BASE_REQUESTS, BASE_REQUESTS + n)}
        per = {m: (runs[m, BASE_REQUESTS + n].result() - runs[m, BASE_REQUESTS].result()) / n for m in modes}
    extra = per["tier"] - per["name"]
    print(f"instructions per request: by name {per['name']:,.0f}, by tier {per['tier']:,.0f}, "
          f"tier - name {extra:+,.0f} ({100 * extra / per['name']:+.1f} %)")
    for mode in modes[2:]:
        more = per[mode] - per["name"]
        print(f"  {PATHS[mode]}: {per[mode]:,.0f} ({more:+,.0f}, {100 * more / per['name']:+.1f} % against chat)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
