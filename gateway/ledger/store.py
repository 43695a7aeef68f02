"""The spend ledger: one record per billed request (completed, failed after usage, abandoned, or
answered from the response cache at $0), written off the response's path.

`add` only appends to a buffer (a few microseconds); the Redis ledger (`store_redis.py`) writes
the buffer in one pipeline every `ledger.flush_interval_s`, the PostgreSQL one (`store_pg.py`, with
`database_url`) in batches as often. Without either the newest `ledger.max_memory_records` records
are kept in this process's memory.

Record times are UTC ISO strings with microseconds (`2026-11-26T10:00:00.123456+00:00`), so a
time range is a string comparison. Money is integer pico-USD.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import orjson

from gateway.config.schema import LedgerConfig

__all__ = ["FIELDS", "Ledger", "LedgerRecord", "MemoryLedger", "iso"]

PAGE = 1000  # records per page when reading


def iso(at: datetime) -> str:
    """The ledger's time format (UTC, microseconds), comparable as a string."""
    return at.astimezone(UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True, slots=True)
class LedgerRecord:
    time: str
    request_id: str
    key_id: str
    key_alias: str
    team: str
    model: str
    provider: str
    tier: str
    input_tokens: int  # uncached input
    cached_input_tokens: int
    cache_write_tokens: int
    output_tokens: int  # excluding reasoning
    reasoning_tokens: int
    cost_input_pico: int
    cost_cached_input_pico: int
    cost_cache_write_pico: int
    cost_output_pico: int
    cost_reasoning_pico: int
    cost_pico: int  # the total, what the client was told
    cache: str  # hit | miss | bypass
    route: str  # x-gateway-route when routed by tier, else ""
    status: str  # HTTP status the request ended with ("499": the client went away)
    latency_ms: float
    routing_saved_pico: int = 0  # the tier's baseline would have cost this much more
    cache_saved_pico: int = 0  # a response-cache hit: what the answer cost when it was stored
    audio_tokens: int = 0  # audio in and out (not in the text buckets above)
    cost_audio_pico: int = 0
    service_tier: str = "default"  # the service tier billed (default | flex | priority | batch)

    def to_dict(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in FIELDS}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LedgerRecord:
        return cls(**{k: v for k, v in data.items() if k in _FIELD_SET})


FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(LedgerRecord))
_FIELD_SET = frozenset(FIELDS)


class Ledger(Protocol):
    def add(self, record: LedgerRecord) -> None:
        """Queue one record (never blocks, never raises)."""

    async def flush(self) -> None:
        """Write what this process has queued."""

    async def run(self) -> None:
        """The background writer, until `stop` (returns at once when there is nothing to do in the
        background). Stop it with `stop`, never by cancelling it: a cancelled write is either lost
        or, if Redis had already applied it, written twice when retried."""

    def stop(self) -> None:
        """Ask `run` to write what is queued and return."""

    def backlog(self) -> tuple[int, int]:
        """Records not yet where they are kept: (queued in this process, in the local journal)."""

    def pages(self, start: datetime, end: datetime) -> AsyncIterator[list[LedgerRecord]]:
        """Records with start <= time < end, in pages of at most PAGE, oldest day first."""


class MemoryLedger:
    """This process's newest records, bounded; for one process without Redis. Kept as (time,
    JSON bytes): bytes are not containers, so 100,000 records add nothing to the garbage
    collector's full passes (as objects they made every pass walk them, a request-latency tail)."""

    def __init__(self, config: LedgerConfig) -> None:
        self._records: deque[tuple[str, bytes]] = deque(maxlen=config.max_memory_records)
        self._retention = timedelta(days=config.kept_days(False))

    def add(self, record: LedgerRecord) -> None:
        # A copy: orjson's own result keeps its ~8 KB working buffer; the copy is the JSON's size.
        self._records.append((record.time, bytes(memoryview(orjson.dumps(record)))))

    async def flush(self) -> None:
        return None

    async def run(self) -> None:
        return None

    def stop(self) -> None:
        return None

    def backlog(self) -> tuple[int, int]:
        return 0, 0

    async def pages(self, start: datetime, end: datetime) -> AsyncIterator[list[LedgerRecord]]:
        low = max(iso(start), iso(datetime.now(UTC) - self._retention))
        high = iso(end)
        matching = [LedgerRecord.from_dict(orjson.loads(raw)) for t, raw in list(self._records) if low <= t < high]
        for i in range(0, len(matching), PAGE):
            yield matching[i:i + PAGE]
