"""Python load generators (asyncio + aiohttp, uvloop when available).

* ``open_loop``: requests are scheduled at a fixed rate and each is fired at its scheduled time no
  matter how many are outstanding; latency is measured from the *scheduled* send time (so a slow
  server or a late generator cannot hide queueing: no coordinated omission). Warm-up samples are
  discarded. How late the generator actually sent (actual - scheduled) is reported too.
* ``closed_loop_streams``: N workers each run streams back to back; a stream counts once
  ``data: [DONE]`` has been read. Throughput = completions inside the measured window / window.
"""

from __future__ import annotations

import asyncio
import math
import os
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from time import perf_counter
from types import MappingProxyType
from typing import Any, TypeVar

import aiohttp
import orjson

T = TypeVar("T")
HEADERS = MappingProxyType({"Content-Type": "application/json", "Authorization": "Bearer x"})
_DONE = b"data: [DONE]"


def chat_body(model: str, stream: bool = False) -> bytes:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": "Say hello"}]}
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return orjson.dumps(body)


def run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[rank - 1]


def summary_ms(values_s: list[float]) -> dict[str, float]:
    ms = [v * 1000.0 for v in values_s]
    return {"n": len(ms), "p50": percentile(ms, 50), "p99": percentile(ms, 99), "max": max(ms, default=math.nan)}


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def _session(limit: int, headers: Mapping[str, str] | None = None) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=limit, keepalive_timeout=60)
    return aiohttp.ClientSession(
        connector=connector, headers={**HEADERS, **(headers or {})}, timeout=aiohttp.ClientTimeout(total=60),
        auto_decompress=False,
    )


@dataclass(slots=True)
class Sample:
    sched: float
    late: float
    latency: float | None = None  # scheduled send -> response fully read
    ttfb: float | None = None  # scheduled send -> first chunk with non-empty delta content
    error: str | None = None


def _first_content(line: bytes) -> bool:
    """True if an SSE ``data:`` line carries a chunk whose delta has non-empty content."""
    if not line.startswith(b"data:"):
        return False
    payload = line[5:].strip()
    if not payload or payload == b"[DONE]":
        return False
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return False
    for choice in obj.get("choices") or ():
        if (choice.get("delta") or {}).get("content"):
            return True
    return False


async def _fire(session: aiohttp.ClientSession, url: str, body: bytes, sched: float, stream: bool) -> Sample:
    sample = Sample(sched, perf_counter() - sched)
    try:
        async with session.post(url, data=body) as resp:
            if not stream:
                await resp.read()
            else:
                done = False
                async for line in resp.content:
                    if sample.ttfb is None:
                        if _first_content(line):
                            sample.ttfb = perf_counter() - sched
                    elif line.startswith(_DONE):
                        done = True
                if resp.status == 200 and not done:
                    sample.error = "stream ended without [DONE]"
            if resp.status != 200:
                sample.error = f"HTTP {resp.status}"
        sample.latency = perf_counter() - sched
    except (aiohttp.ClientError, TimeoutError) as exc:
        sample.error = f"{type(exc).__name__}: {exc}"
    return sample


async def _open_loop(
    url: str, body: bytes | Callable[[int], bytes], rate: float, duration: float, warmup: float, stream: bool,
    keep: bool = False, headers: Mapping[str, str] | None = None,
) -> dict:
    n_warm = int(round(warmup * rate))
    n_total = n_warm + int(round(duration * rate))
    async with _session(limit=0, headers=headers) as session:
        tasks: list[asyncio.Task[Sample]] = []
        start = perf_counter() + 0.05
        cpu0 = wall0 = 0.0
        for i in range(n_total):
            sched = start + i / rate
            if i == n_warm:
                cpu0, wall0 = _cpu(), perf_counter()
            delay = sched - perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            payload = body(i) if callable(body) else body  # a callable gives each request its own body
            tasks.append(asyncio.create_task(_fire(session, url, payload, sched, stream)))
        samples = await asyncio.gather(*tasks)
        cpu_util = (_cpu() - cpu0) / max(perf_counter() - wall0, 1e-9)
    measured = samples[n_warm:]
    errors = [s.error for s in measured if s.error]
    ok = [s for s in measured if not s.error]
    out: dict[str, Any] = {
        "rate": rate,
        "sent": len(measured),
        "errors": len(errors),
        "error_examples": sorted(set(errors))[:3],
        "latency_ms": summary_ms([s.latency for s in ok if s.latency is not None]),
        "send_lateness_ms": summary_ms([s.late for s in measured]),
        "client_cpu_util": cpu_util,
    }
    if stream:
        out["ttfb_ms"] = summary_ms([s.ttfb for s in ok if s.ttfb is not None])
    if keep:  # raw samples, for pooling several runs (the caller drops them before writing JSON)
        out["latencies_s"] = [s.latency for s in ok if s.latency is not None]
    return out


def open_loop(
    url: str, body: bytes | Callable[[int], bytes], rate: float, duration: float, warmup: float = 1.0,
    stream: bool = False, keep: bool = False, headers: Mapping[str, str] | None = None,
) -> dict:
    """Open-loop run at ``rate`` req/s for ``duration`` s after ``warmup`` s (discarded);
    ``keep=True`` adds the raw latencies (seconds) as ``latencies_s``; ``headers`` override."""
    return run(_open_loop(url, body, rate, duration, warmup, stream, keep, headers))


async def _stream_once(session: aiohttp.ClientSession, url: str, body: bytes) -> bool:
    async with session.post(url, data=body) as resp:
        tail = b""
        async for chunk in resp.content.iter_any():
            window = tail + chunk
            if _DONE in window:
                await resp.read()
                return resp.status == 200
            tail = window[-len(_DONE) :]
        return False


async def _closed_loop(url: str, body: bytes, concurrency: int, duration: float, warmup: float) -> dict:
    t0 = perf_counter()
    window_start, end = t0 + warmup, t0 + warmup + duration
    completed: list[float] = []
    errors: list[str] = []

    async def worker(session: aiohttp.ClientSession) -> None:
        while perf_counter() < end:
            try:
                ok = await _stream_once(session, url, body)
            except (aiohttp.ClientError, TimeoutError) as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                continue
            if ok:
                completed.append(perf_counter())
            else:
                errors.append("stream not 200 or no [DONE]")

    async with _session(limit=concurrency) as session:
        cpu_task = asyncio.create_task(_cpu_at(window_start, end))
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        cpu_util = await cpu_task
    in_window = sum(1 for t in completed if window_start <= t <= end)
    return {
        "concurrency": concurrency,
        "streams": in_window,
        "streams_per_s": in_window / duration,
        "errors": len(errors),
        "error_examples": sorted(set(errors))[:3],
        "client_cpu_util": cpu_util,
    }


async def _cpu_at(start: float, end: float) -> float:
    """This process's CPU utilisation (1.0 = one core) between two perf_counter instants."""
    await asyncio.sleep(max(0.0, start - perf_counter()))
    cpu0, w0 = _cpu(), perf_counter()
    await asyncio.sleep(max(0.0, end - perf_counter()))
    return (_cpu() - cpu0) / max(perf_counter() - w0, 1e-9)


def closed_loop_streams(url: str, body: bytes, concurrency: int, duration: float, warmup: float = 1.0) -> dict:
    """Streams/s with ``concurrency`` back-to-back streaming clients."""
    return run(_closed_loop(url, body, concurrency, duration, warmup))
