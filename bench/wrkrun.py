"""Run wrk with ``wrk_post.lua`` and parse its result."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

LUA = Path(__file__).resolve().parent / "wrk_post.lua"
_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")
_NON2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_SOCKET = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


@dataclass
class WrkResult:
    connections: int
    rps: float
    requests: int
    duration_s: float
    non_2xx: int
    socket_errors: int
    incomplete: int
    lat_p50_ms: float
    lat_p99_ms: float
    lat_max_ms: float

    @property
    def errors(self) -> int:
        return self.non_2xx + self.socket_errors + self.incomplete

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "errors": self.errors}


def wrk_binary() -> str:
    path = shutil.which("wrk") or "/usr/bin/wrk"
    if not os.access(path, os.X_OK):
        raise RuntimeError("wrk not found (expected /usr/bin/wrk)")
    return path


def run_wrk(
    url: str, model: str, connections: int, duration_s: float, threads: int = 2, stream: bool = False,
    deterministic: bool = False,
) -> WrkResult:
    """One wrk run against ``url``; raises if wrk fails or prints nothing parseable."""
    secs = max(1, round(duration_s))
    cmd = [
        wrk_binary(), f"-t{threads}", f"-c{connections}", f"-d{secs}s", "--timeout", "10s",
        "-s", str(LUA), url, "--", model,
    ]
    env = dict(os.environ)
    if stream:
        cmd.append("stream")
        env["WRK_CHECK_DONE"] = "1"
    elif deterministic:
        cmd.append("t0")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=secs + 60, check=False)
    out = proc.stdout
    if proc.returncode != 0 or "WRKJSON" not in out:
        raise RuntimeError(f"wrk failed (rc={proc.returncode}):\n{out}\n{proc.stderr}")
    return parse_wrk(out, connections)


def parse_wrk(out: str, connections: int) -> WrkResult:
    data = orjson.loads(out.split("WRKJSON", 1)[1].splitlines()[0])
    m = _RPS.search(out)
    duration = data["duration_us"] / 1e6
    rps = float(m.group(1)) if m else data["requests"] / duration
    non2xx = _NON2XX.search(out)
    sock = _SOCKET.search(out)
    socket_errors = sum(int(g) for g in sock.groups()) if sock else 0
    return WrkResult(
        connections=connections,
        rps=rps,
        requests=int(data["requests"]),
        duration_s=duration,
        non_2xx=int(non2xx.group(1)) if non2xx else int(data["status"]),
        socket_errors=socket_errors,
        incomplete=int(data["incomplete"]),
        lat_p50_ms=data["lat_p50_us"] / 1000,
        lat_p99_ms=data["lat_p99_us"] / 1000,
        lat_max_ms=data["lat_max_us"] / 1000,
    )
