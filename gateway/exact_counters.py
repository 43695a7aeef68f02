"""Money counters that stay exact: integer pico-USD per label set, turned into USD once, when
`/metrics` is scraped. prometheus-client's own counters add a float on every increment, so 40
requests at $0.0035 read $0.1400000000000001; PRODUCT.md §5 says money is never accumulated in
floats, and the sum of the requests' `x-gateway-cost-usd` must equal `gateway_spend_usd_total`.

An increment is one dict update (cheaper than a prometheus-client counter's lock and float).
With several workers (`PROMETHEUS_MULTIPROC_DIR` set), each worker also writes its totals to
`money_<pid>.json` in that directory, at most `FLUSH_S` after they change, before answering a
scrape, and at shutdown; a scrape adds the other workers' files to its own totals. So a scrape
on one worker may miss up to `FLUSH_S` of another worker's latest requests (with one worker
nothing lags), but a total never goes down from one scrape to the next, whichever worker answers
each (Prometheus would read a drop as a counter reset). A worker that is killed outright (SIGKILL,
out of memory) loses what it had not yet written from these counters; the spend ledger keeps it.
A worker that reuses a dead worker's pid carries on from that worker's file.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from gateway.pricing import PICO_PER_USD

__all__ = ["FLUSH_S", "ExactCounters", "MoneyCounter"]

log = logging.getLogger("gateway.metrics")
FLUSH_S = 0.5
_PREFIX = "money_"


class MoneyCounter:
    """One money counter: `add(labels, pico)` with the label values in declaration order."""

    __slots__ = ("name", "doc", "labelnames", "totals")

    def __init__(self, name: str, doc: str, labelnames: tuple[str, ...]) -> None:
        self.name = name  # without the `_total` that the exposition adds
        self.doc = doc
        self.labelnames = labelnames
        self.totals: dict[tuple[str, ...], int] = {}

    def add(self, labels: tuple[str, ...], pico: int) -> None:
        totals = self.totals
        totals[labels] = totals.get(labels, 0) + pico


class ExactCounters(Collector):
    """The process's money counters, as one prometheus-client collector."""

    def __init__(self, directory: str | None, pid: int | None = None) -> None:
        self._counters: dict[str, MoneyCounter] = {}
        self._dir = Path(directory) if directory else None
        self._own = f"{_PREFIX}{pid or os.getpid()}.json"
        self._written = b""
        self._inherited: dict[str, dict[tuple[str, ...], int]] = {}
        if self._dir is not None and (self._dir / self._own).exists():  # a dead worker had this pid
            self._inherited = _read(self._dir / self._own)

    def counter(self, name: str, doc: str, labelnames: Iterable[str] = ()) -> MoneyCounter:
        assert name.endswith("_total"), name
        found = self._counters[name] = MoneyCounter(name.removesuffix("_total"), doc, tuple(labelnames))
        found.totals.update(self._inherited.get(found.name, {}))
        return found

    def describe(self) -> Iterator[CounterMetricFamily]:
        for counter in self._counters.values():
            yield CounterMetricFamily(counter.name, counter.doc, labels=counter.labelnames)

    def collect(self) -> Iterator[CounterMetricFamily]:
        self.flush_logged()  # first: a later scrape on another worker reads at least what this one says
        totals = self._merged()
        for counter in self._counters.values():
            family = CounterMetricFamily(counter.name, counter.doc, labels=counter.labelnames)
            series = totals[counter.name]
            if not counter.labelnames and not series:
                series = {(): 0}  # a counter without labels always has its one series
            for labels, pico in sorted(series.items()):
                family.add_metric(labels, pico / PICO_PER_USD)  # int / int: the float nearest the exact sum
            yield family

    def _merged(self) -> dict[str, dict[tuple[str, ...], int]]:
        """This process's totals plus, with several workers, the others' last written ones."""
        merged = {c.name: dict(c.totals) for c in self._counters.values()}
        if self._dir is None:
            return merged
        for path in sorted(self._dir.glob(f"{_PREFIX}*.json")):
            if path.name == self._own:
                continue
            for name, written in _read(path).items():
                series = merged.get(name)
                if series is not None:
                    for labels, pico in written.items():
                        series[labels] = series.get(labels, 0) + pico
        return merged

    def flush(self) -> None:
        """Write this process's totals for the other workers' scrapes (several workers only)."""
        if self._dir is None:
            return
        data = json.dumps(
            {c.name: [[*labels, pico] for labels, pico in c.totals.items()] for c in self._counters.values()},
            separators=(",", ":"),
        ).encode()
        if data == self._written:
            return
        temp = self._dir / f".{self._own}.tmp"
        temp.write_bytes(data)
        os.replace(temp, self._dir / self._own)
        self._written = data

    async def flush_forever(self) -> None:
        """With several workers: flush every `FLUSH_S` (an unchanged file is not rewritten)."""
        if self._dir is None:
            return
        while True:
            await asyncio.sleep(FLUSH_S)
            self.flush_logged()

    def flush_logged(self) -> None:
        try:
            self.flush()
        except OSError as exc:
            log.warning("money counters not written: %s", exc)


def _read(path: Path) -> dict[str, dict[tuple[str, ...], int]]:
    """A worker's written totals (files are replaced atomically, so never half-written)."""
    try:
        written = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        log.warning("money counter file %s not read: %s", path, exc)
        return {}
    return {name: {tuple(labels): int(pico) for *labels, pico in rows} for name, rows in written.items()}
