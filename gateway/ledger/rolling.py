"""Spend per second of record time and per (key id, team), for the spend forecast's sliding window
over the Redis ledger (`store_redis.RedisLedger.sums`). The streams are read from where the last
read stopped (a cursor per day's stream), so each refresh decodes only the records written since
the one before, not the whole window's: an hour of 200 requests a second is 720,000 records, which
every replica would otherwise decode every `gauge_interval_s`.

Money stays exact (integer pico-USD); time is kept to the whole second: a window includes the
seconds from the one after its start to the one its end falls in (an hour's window may so leave
out up to a second's records at its start)."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime

__all__ = ["RollingSums"]

Pair = tuple[str, str]  # (key id, team)


class RollingSums:
    def __init__(self) -> None:
        self.cursors: dict[date, str] = {}  # per day's stream: the id of the last entry read
        self.since: float | None = None  # the buckets hold every record from this time on
        self._buckets: dict[int, dict[Pair, int]] = {}  # whole second -> spend per pair

    def restart(self, since: float) -> None:
        """Forget everything: the next reads start again, covering records from `since` on."""
        self.cursors.clear()
        self._buckets.clear()
        self.since = since

    def add(self, time: str, pair: Pair, pico: int) -> None:
        """One record: its ISO time, (key id, team) and cost."""
        second = int(datetime.fromisoformat(time).timestamp())
        bucket = self._buckets.get(second)
        if bucket is None:
            bucket = self._buckets[second] = defaultdict(int)
        bucket[pair] += pico

    def window(self, start: float, end: float) -> dict[Pair, int]:
        """Spend per pair of the seconds after `start`'s up to `end`'s (both Unix times); the
        seconds before it are forgotten (windows only move forward), and so are the cursors of
        days before `start`'s."""
        first, last = int(start) + 1, int(end)
        for second in [s for s in self._buckets if s < first]:
            del self._buckets[second]
        out: dict[Pair, int] = defaultdict(int)
        for second, bucket in self._buckets.items():
            if second <= last:
                for pair, pico in bucket.items():
                    out[pair] += pico
        day = datetime.fromtimestamp(start, UTC).date()
        for old in [d for d in self.cursors if d < day]:
            del self.cursors[old]
        self.since = max(self.since or start, start)
        return dict(out)
