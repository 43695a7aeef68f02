"""CPU accounting for one benchmark phase: named processes, this process, and the whole machine."""

from __future__ import annotations

import os
import time
from pathlib import Path

from procs import cpu_seconds

CPUS = os.cpu_count() or 1


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies summed over all CPUs, from the first line of /proc/stat."""
    vals = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    total = sum(vals[:8])  # user nice system idle iowait irq softirq steal (guest is inside user)
    not_ours = vals[3] + vals[4] + vals[7]  # idle + iowait + steal (the hypervisor ran someone else)
    return total - not_ours, total


def client_cpu() -> float:
    """CPU seconds of this process plus its reaped children (wrk runs are reaped children)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class Meter:
    """``with Meter({"gateway": (pid, include_children)}) as m: ...`` then ``m.cpu`` (s) / ``m.util`` (cores).

    ``util`` also holds ``client`` (this process + wrk), ``machine`` (busy cores over all CPUs) and
    ``other`` = machine - everything we started: CPU used by processes outside the benchmark.
    """

    def __init__(self, pids: dict[str, tuple[int, bool]]) -> None:
        self.pids = pids
        self.cpu: dict[str, float] = {}
        self.util: dict[str, float] = {}
        self.wall = 0.0

    def _read(self) -> dict[str, float]:
        vals = {name: cpu_seconds(pid, kids) for name, (pid, kids) in self.pids.items()}
        vals["client"] = client_cpu()
        return vals

    def __enter__(self) -> Meter:
        self._t0, self._m0, self._c0 = time.perf_counter(), machine_ticks(), self._read()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self._t0
        c1, (busy1, total1) = self._read(), machine_ticks()
        self.cpu = {name: c1[name] - self._c0[name] for name in c1}
        self.util = {name: v / max(self.wall, 1e-9) for name, v in self.cpu.items()}
        busy0, total0 = self._m0
        machine = (busy1 - busy0) / max(total1 - total0, 1) * CPUS
        self.util["machine"] = machine
        self.util["other"] = max(0.0, machine - sum(self.util[n] for n in c1))


def idle_check(seconds: float = 1.0) -> float:
    """Busy cores on the machine over ``seconds`` before the benchmark starts."""
    with Meter({}) as m:
        time.sleep(seconds)
    return m.util["machine"]


def wait_idle(max_wait: float, threshold: float = 0.25, sample: float = 0.5) -> float:
    """Wait (up to ``max_wait`` s) for the machine to be quiet; returns the last busy-cores sample."""
    deadline = time.monotonic() + max_wait
    busy = idle_check(sample)
    while busy > threshold and time.monotonic() < deadline:
        busy = idle_check(sample)
    return busy
