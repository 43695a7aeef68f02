"""Reading the spend ledger: spend per group (model, key, team, tier, day), the dashboard's
summary, and export as JSON lines or CSV. All sums are integer pico-USD."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import datetime

import orjson

from gateway.ledger.spend_stats import GROUPS
from gateway.ledger.store import FIELDS, Ledger, LedgerRecord

__all__ = ["GROUPS", "Summary", "export", "group_of", "spend_by", "summarise"]



def group_of(record: LedgerRecord, group_by: str) -> str:
    """The record's group; "" means none (no key, no team, not routed), as in `spend_stats`."""
    if group_by == "day":
        return record.time[:10]
    if group_by == "key":
        return record.key_id
    return str(getattr(record, group_by))


async def spend_by(ledger: Ledger, start: datetime, end: datetime, group_by: str) -> dict[str, int]:
    """Pico-USD per group; groups are sorted; records without the group are left out."""
    out: dict[str, int] = defaultdict(int)
    async for page in ledger.pages(start, end):
        for record in page:
            group = group_of(record, group_by)
            if group:
                out[group] += record.cost_pico
    return dict(sorted(out.items()))


@dataclass
class Summary:
    """What the dashboard shows."""

    requests: int = 0
    spend: int = 0
    routing_saved: int = 0
    cache_saved: int = 0
    cache_hits: int = 0
    by_model: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    by_team: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    by_day: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def add(self, records: Iterable[LedgerRecord]) -> None:
        for r in records:
            self.requests += 1
            self.spend += r.cost_pico
            self.routing_saved += r.routing_saved_pico
            self.cache_saved += r.cache_saved_pico
            self.cache_hits += r.cache == "hit"
            self.by_model[r.model] += r.cost_pico
            self.by_team[r.team or "(no team)"] += r.cost_pico
            self.by_day[r.time[:10]] += r.cost_pico


async def summarise(ledger: Ledger, start: datetime, end: datetime) -> Summary:
    summary = Summary()
    async for page in ledger.pages(start, end):
        summary.add(page)
    return summary


async def export(ledger: Ledger, start: datetime, end: datetime, fmt: str) -> AsyncIterator[bytes]:
    """The records as JSON lines (`jsonl`) or CSV with a header row (`csv`), page by page."""
    if fmt == "csv":
        yield (",".join(FIELDS) + "\r\n").encode()
    async for page in ledger.pages(start, end):
        if fmt == "jsonl":
            yield b"".join(orjson.dumps(r) + b"\n" for r in page)
            continue
        text = io.StringIO()
        writer = csv.writer(text)
        writer.writerows([getattr(r, f) for f in FIELDS] for r in page)
        yield text.getvalue().encode()
