"""Money metrics that stay exact: integer pico-USD per label set, turned into USD once, when
`/metrics` is scraped. prometheus-client's own counters and histogram sums add a float on every
increment, so 40 requests at $0.0035 read $0.1400000000000001; PRODUCT.md §5 says money is never
accumulated in floats, and the sum of the requests' `x-gateway-cost-usd` must equal
`gateway_spend_usd_total`.

A counter's increment is one dict update; a histogram's a bisect and two integer additions (both
cheaper than prometheus-client's lock and float, or its loop over the buckets). A histogram's
amounts are fixed-point integers in `unit`s per 1: pico-USD per USD for money, or e.g. millionths
for a ratio that is not money (routing's actual / estimated cost), which gets the same exact,
cheap histogram. With several
workers (`PROMETHEUS_MULTIPROC_DIR` set), each worker also writes its totals to
`money_<pid>.json` in that directory, at most `FLUSH_S` after they change, before answering a
scrape, and at shutdown; a scrape adds the other workers' files to its own totals. So a scrape
on one worker may miss up to `FLUSH_S` of another worker's latest requests (with one worker
nothing lags), but a total never goes down from one scrape to the next, whichever worker answers
each (Prometheus would read a drop as a counter reset). A worker that is killed outright (SIGKILL,
out of memory) loses what it had not yet written from these metrics; the spend ledger keeps it.
A worker that reuses a dead worker's pid carries on from that worker's file.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from decimal import Decimal
from itertools import accumulate
from pathlib import Path
from typing import Any, TypeVar

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from gateway.money.pricing import PICO_PER_USD

__all__ = ["FLUSH_S", "MoneyCounter", "MoneyHistogram", "MoneyMetrics"]

log = logging.getLogger("gateway.metrics")
FLUSH_S = 0.5
_PREFIX = "money_"
Labels = tuple[str, ...]


class MoneyCounter:
    """A counter: `add(labels, pico)`, the label values in declaration order."""

    __slots__ = ("name", "doc", "labelnames", "totals")

    def __init__(self, name: str, doc: str, labelnames: Labels) -> None:
        self.name = name.removesuffix("_total")  # the exposition adds it
        self.doc = doc
        self.labelnames = labelnames
        self.totals: dict[Labels, Any] = {}  # pico-USD

    def add(self, labels: Labels, pico: int) -> None:
        totals = self.totals
        totals[labels] = totals.get(labels, 0) + pico

    def zero(self) -> int:
        return 0

    @staticmethod
    def combine(a: int, b: int) -> int:
        return a + b

    def family(self, series: dict[Labels, Any]) -> Metric:
        family = CounterMetricFamily(self.name, self.doc, labels=self.labelnames)
        if not self.labelnames and not series:
            series = {(): 0}  # a counter without labels always has its one series
        for labels, pico in sorted(series.items()):
            family.add_metric(labels, pico / PICO_PER_USD)  # int / int: the float nearest the exact sum
        return family


class MoneyHistogram:
    """A histogram of amounts: `observe(labels, amount)`, the amount an integer in `unit`s (pico-USD
    by default). Per label set: the count of each bucket (not cumulative; the last one is +Inf),
    then the sum in `unit`s."""

    __slots__ = ("name", "doc", "labelnames", "totals", "unit", "_bounds", "_les")

    def __init__(self, name: str, doc: str, labelnames: Labels, buckets: Iterable[float],
                 unit: int = PICO_PER_USD) -> None:
        self.name, self.doc, self.labelnames, self.unit = name, doc, labelnames, unit
        self.totals: dict[Labels, Any] = {}
        bounds = sorted(buckets)
        self._bounds = tuple(int(Decimal(repr(b)) * unit) for b in bounds)  # exact, e.g. 1e-06 USD -> 10**6 pico
        # `le` as prometheus-client writes it
        self._les = [*(floatToGoString(b) for b in bounds), "+Inf"]  # type: ignore[no-untyped-call]

    def observe(self, labels: Labels, amount: int) -> None:
        row = self.totals.get(labels)
        if row is None:
            row = self.totals[labels] = self.zero()
        row[bisect_left(self._bounds, amount)] += 1  # the first bucket whose bound is >= the amount
        row[-1] += amount

    def zero(self) -> list[int]:
        return [0] * (len(self._bounds) + 2)

    @staticmethod
    def combine(a: list[int], b: list[int]) -> list[int]:
        return [x + y for x, y in zip(a, b, strict=True)]

    def family(self, series: dict[Labels, Any]) -> Metric:
        family = HistogramMetricFamily(self.name, self.doc, labels=self.labelnames)
        for labels, row in sorted(series.items()):
            buckets = list(zip(self._les, accumulate(row[:-1]), strict=True))
            family.add_metric(labels, buckets, sum_value=row[-1] / self.unit)
        return family


M = TypeVar("M", MoneyCounter, MoneyHistogram)


class MoneyMetrics(Collector):
    """The process's money metrics, as one prometheus-client collector."""

    def __init__(self, directory: str | None, pid: int | None = None) -> None:
        self._metrics: list[MoneyCounter | MoneyHistogram] = []
        self._dir = Path(directory) if directory else None
        self._own = f"{_PREFIX}{pid or os.getpid()}.json"
        self._written = b""
        self._inherited: dict[str, dict[Labels, Any]] = {}
        if self._dir is not None and (self._dir / self._own).exists():  # a dead worker had this pid
            self._inherited = _read(self._dir / self._own)

    def counter(self, name: str, doc: str, labelnames: Iterable[str] = ()) -> MoneyCounter:
        assert name.endswith("_total"), name
        return self._declared(MoneyCounter(name, doc, tuple(labelnames)))

    def histogram(self, name: str, doc: str, labelnames: Iterable[str], buckets: Iterable[float],
                  unit: int = PICO_PER_USD) -> MoneyHistogram:
        return self._declared(MoneyHistogram(name, doc, tuple(labelnames), buckets, unit))

    def _declared(self, metric: M) -> M:
        metric.totals.update(self._inherited.pop(metric.name, {}))
        self._metrics.append(metric)
        return metric

    def describe(self) -> Iterator[Metric]:
        for metric in self._metrics:
            yield metric.family({})

    def collect(self) -> Iterator[Metric]:
        self.flush_logged()  # first: a later scrape on another worker reads at least what this one says
        merged = self._merged()
        for metric in self._metrics:
            yield metric.family(merged[metric.name])

    def _merged(self) -> dict[str, dict[Labels, Any]]:
        """This process's totals plus, with several workers, the others' last written ones."""
        merged = {m.name: dict(m.totals) for m in self._metrics}
        if self._dir is None:
            return merged
        by_name = {m.name: m for m in self._metrics}
        for path in sorted(self._dir.glob(f"{_PREFIX}*.json")):
            if path.name == self._own:
                continue
            for name, written in _read(path).items():
                series = merged.get(name)
                if series is None:
                    continue
                metric: Any = by_name[name]
                for labels, value in written.items():
                    try:
                        series[labels] = metric.combine(series.get(labels) or metric.zero(), value)
                    except (TypeError, ValueError):  # not this build's shape: never fail the whole scrape
                        log.warning("money metrics file %s: %s %s not read", path, name, labels)
        return merged

    def flush(self) -> None:
        """Write this process's totals for the other workers' scrapes (several workers only)."""
        if self._dir is None:
            return
        data = json.dumps(
            {m.name: [[*labels, value] for labels, value in m.totals.items()] for m in self._metrics},
            separators=(",", ":"),
        ).encode()
        if data == self._written:
            return
        temp = self._dir / f".{self._own}.tmp"
        temp.write_bytes(data)
        os.replace(temp, self._dir / self._own)
        self._written = data

    def flush_logged(self) -> None:
        try:
            self.flush()
        except OSError as exc:
            log.warning("money metrics not written: %s", exc)

    async def flush_forever(self) -> None:
        """With several workers: flush every `FLUSH_S` (an unchanged file is not rewritten)."""
        if self._dir is None:
            return
        while True:
            await asyncio.sleep(FLUSH_S)
            self.flush_logged()


def _read(path: Path) -> dict[str, dict[Labels, Any]]:
    """A worker's written totals (files are replaced atomically, so never half-written)."""
    try:
        written = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        log.warning("money metrics file %s not read: %s", path, exc)
        return {}
    return {name: {tuple(labels): value for *labels, value in rows} for name, rows in written.items()}
