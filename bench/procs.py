"""Process helpers for the benchmark: free ports, start/stop of the fake upstream and the gateway,
and CPU / memory readings from /proc.

Every process is started in its own session (process group) so it can be stopped, with whatever
workers it forked, by signalling that group only. ``Procs.stop_all`` is meant for a ``finally``.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

REPO = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
CHAT_PATH = "/v1/chat/completions"
HEADERS = MappingProxyType({"Content-Type": "application/json", "Authorization": "Bearer x"})


class BenchError(RuntimeError):
    """A benchmark step failed (process did not start, errors under load, ...)."""


def free_port() -> int:
    """A currently free loopback TCP port (bind to port 0, read it back, release it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    port: int

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, n: int = 20) -> str:
        try:
            lines = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM the process group, then SIGKILL it if it has not exited within ``timeout``."""
        if self.popen.poll() is not None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.popen.pid, sig)
            try:
                self.popen.wait(timeout=timeout)
                return
            except subprocess.TimeoutExpired:
                continue


@dataclass
class Procs:
    """Starts processes and remembers them, so that ``stop_all`` can end every one of them."""

    tmp: Path
    started: list[Proc] = field(default_factory=list)

    def spawn(self, name: str, args: list[str], port: int) -> Proc:
        log = self.tmp / f"{name}-{port}.log"
        with open(log, "wb") as fh:
            popen = subprocess.Popen(
                [sys.executable, *args], cwd=REPO, stdout=fh, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )
        proc = Proc(name, popen, log, port)
        self.started.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.started):
            proc.stop()
        self.started.clear()

    def start_upstream(self, script: Path, timeout: float = 20.0) -> Proc:
        port = free_port()
        args = ["-m", "gateway.fake_upstream", "--host", "127.0.0.1", "--port", str(port), "--script", str(script)]
        proc = self.spawn("upstream", args, port)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "fake upstream listening on" in proc.log.read_text(errors="replace"):
                return proc
            if proc.popen.poll() is not None:
                break
            time.sleep(0.02)
        raise BenchError(f"fake upstream did not start:\n{proc.log_tail()}")

    def start_gateway(self, config: Path, workers: int = 1, timeout: float = 30.0) -> Proc:
        port = free_port()
        args = ["-m", "gateway", "serve", "--config", str(config), "--port", str(port), "--workers", str(workers)]
        proc = self.spawn("gateway", args, port)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if http_status(port, "GET", "/healthz") == 200:
                return proc
            if proc.popen.poll() is not None:
                break
            time.sleep(0.02)
        raise BenchError(f"gateway did not become healthy:\n{proc.log_tail()}")


def http_status(port: int, method: str, path: str, body: bytes | None = None, timeout: float = 2.0) -> int | None:
    """Status of one request on a fresh connection, or None if it could not be made."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=dict(HEADERS) if body is not None else {})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def cold_start(procs: Procs, config: Path, body: bytes, poll_s: float = 0.01, timeout: float = 60.0) -> float:
    """Seconds from ``Popen`` of a fresh 1-worker gateway to its first 200 on the chat endpoint."""
    port = free_port()
    args = ["-m", "gateway", "serve", "--config", str(config), "--port", str(port), "--workers", "1"]
    t0 = time.perf_counter()
    proc = procs.spawn("gateway-cold", args, port)
    try:
        while time.perf_counter() - t0 < timeout:
            if http_status(port, "POST", CHAT_PATH, body) == 200:
                return time.perf_counter() - t0
            if proc.popen.poll() is not None:
                raise BenchError(f"cold-start gateway exited:\n{proc.log_tail()}")
            time.sleep(poll_s)
        raise BenchError(f"cold-start gateway gave no 200 within {timeout:.0f}s:\n{proc.log_tail()}")
    finally:
        proc.stop()


def _stat_fields(pid: int) -> list[str]:
    raw = Path(f"/proc/{pid}/stat").read_text()
    return raw.rpartition(")")[2].split()  # fields from #3 (state) on; comm may contain spaces


def descendants(pid: int) -> list[int]:
    """Live descendant pids of ``pid`` (uvicorn workers and their children)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                children.setdefault(int(_stat_fields(int(entry))[1]), []).append(int(entry))
    out: list[int] = []
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            out.append(child)
            stack.append(child)
    return out


def cpu_seconds(pid: int, include_children: bool = False) -> float:
    """utime+stime of ``pid`` in seconds; with children: plus live descendants and reaped ones."""
    f = _stat_fields(pid)
    ticks = int(f[11]) + int(f[12])
    if include_children:
        ticks += int(f[13]) + int(f[14])
        for child in descendants(pid):
            with contextlib.suppress(OSError, IndexError, ValueError):
                cf = _stat_fields(child)
                ticks += int(cf[11]) + int(cf[12])
    return ticks / CLK_TCK


def memory_mb(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM of ``pid`` in MiB, from /proc/<pid>/status."""
    out: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(rest.split()[0]) / 1024.0
    return out
