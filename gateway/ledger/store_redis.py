"""The spend ledger in Redis: one stream per UTC day, `<prefix>:{gw-ledger}:YYYY-MM-DD`, each
entry one field `r` holding the record as JSON. Streams are trimmed to about
`ledger.max_per_day` entries (XADD MAXLEN ~) and expire `ledger.retention_days` days after
their day ends (EXPIREAT). The `{gw-ledger}` hash tag keeps every day on one Cluster slot.

Requests only append to this process's buffer; `run` writes it (one Lua call per chunk and day) every
`flush_interval_s` until `stop` (it is never cancelled: a write cut off mid-way is lost, or
doubled if retried). If Redis fails, the batch goes back to the buffer (bounded: the newest
records are dropped first, and said so in the log) and is retried at the next interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import orjson

from gateway.config.schema import LedgerConfig
from gateway.ledger.rolling import RollingSums
from gateway.ledger.store import PAGE, LedgerRecord, iso
from gateway.runtime.redis_scripts import Lua, ScriptBatch

__all__ = ["RedisLedger"]

log = logging.getLogger("gateway.ledger")
_MAX_PENDING = 100_000  # records held in this process while Redis does not answer
_ID_SLACK_S = 300  # `sums`: entries are read from this long before the window's start (clock skew)
_CHUNK = 64  # records per round trip (~0.2 ms of work here, and as long for Redis to run the script)
# KEYS = the day's stream; ARGV = max entries (approximate), expiry (unix s), then the records.
_APPEND = Lua.of("""
local key, maxlen = KEYS[1], ARGV[1]
for i = 3, #ARGV do
  redis.call('XADD', key, 'MAXLEN', '~', maxlen, '*', 'r', ARGV[i])
end
redis.call('EXPIREAT', key, ARGV[2])
return #ARGV - 2
""")


class RedisLedger:
    def __init__(self, redis: Any, prefix: str, config: LedgerConfig) -> None:
        self._redis = redis
        self._prefix = f"{prefix}:{{gw-ledger}}:"
        self._config = config
        self._pending: deque[LedgerRecord] = deque()
        self._stopping = asyncio.Event()
        self._rolling = RollingSums()  # the forecast's window, read incrementally (`sums`)
        self._sums_lock = asyncio.Lock()

    def key(self, day: date) -> str:
        return self._prefix + day.isoformat()

    def add(self, record: LedgerRecord) -> None:
        if len(self._pending) < _MAX_PENDING:
            self._pending.append(record)
        else:
            log.warning("ledger buffer full (Redis unavailable?): record of request %s dropped", record.request_id)

    async def flush(self) -> None:
        """Write the buffer, `_CHUNK` records per round trip, with the event loop free between
        them (one big write would hold up every request in flight, here and in Redis)."""
        while self._pending:
            batch = [self._pending.popleft() for _ in range(min(_CHUNK, len(self._pending)))]
            if not await self._write(batch):
                return
            await asyncio.sleep(0)

    async def _write(self, batch: list[LedgerRecord]) -> bool:
        """One script call per day in the batch, all in one round trip. Records of a call that
        failed (Redis unavailable) go back to the front of the buffer."""
        by_day: dict[str, list[LedgerRecord]] = {}
        for record in batch:
            by_day.setdefault(record.time[:10], []).append(record)
        calls = ScriptBatch(self._redis)
        for day, records in by_day.items():
            end = datetime.combine(date.fromisoformat(day), time(), UTC) + timedelta(
                days=self._config.kept_days(False) + 1)
            calls.add(_APPEND, [self._prefix + day],
                      [self._config.max_per_day, int(end.timestamp()), *map(orjson.dumps, records)])
        results = await calls.run()
        unwritten = [r for records, result in zip(by_day.values(), results, strict=True)
                     if isinstance(result, Exception) for r in records]
        if not unwritten:
            return True
        room = _MAX_PENDING - len(self._pending)
        self._pending.extendleft(reversed(unwritten[:room]))
        failure = next(r for r in results if isinstance(r, Exception))
        log.warning("ledger: %d record(s) not written yet (Redis unavailable: %r)%s", len(unwritten), failure,
                    f"; {len(unwritten) - room} dropped" if room < len(unwritten) else "")
        return False

    async def run(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._config.flush_interval_s)
            await self.flush()

    def stop(self) -> None:
        self._stopping.set()

    def backlog(self) -> tuple[int, int]:
        return len(self._pending), 0

    async def pages(self, start: datetime, end: datetime) -> AsyncIterator[list[LedgerRecord]]:
        low, high = iso(start), iso(end)
        async for rows in self._entries(start, end, "-"):
            page = [r for r in (LedgerRecord.from_dict(orjson.loads(f[b"r"])) for _, f in rows)
                    if low <= r.time < high]
            if page:
                yield page

    async def sums(self, start: datetime, end: datetime) -> dict[tuple[str, str], int]:
        """Pico-USD per (key_id, team) of the records with start <= time < end, to the second (the
        spend forecast's window, `gateway/access/forecast.py`), read incrementally
        (`rolling.py`): each day's stream from where the last call stopped, the first time from
        the entry id of `start` less `_ID_SLACK_S` (an entry's id is Redis's clock when it was
        written, after the record's own time: records wait in a process's buffer first)."""
        async with self._sums_lock:  # (one reader at a time moves the cursors)
            rolling, begin = self._rolling, start.timestamp()
            if rolling.since is None or begin < rolling.since:  # the first window, or an older one
                rolling.restart(begin)
            first = f"{max(int((begin - _ID_SLACK_S) * 1000), 0)}-0"
            day, last = start.astimezone(UTC).date(), end.astimezone(UTC).date()
            while day <= last:
                cursor = rolling.cursors.get(day)
                async for rows in self._day_entries(day, first if cursor is None else "(" + cursor):
                    for _, fields in rows:
                        record = orjson.loads(fields[b"r"])
                        rolling.add(record["time"], (record["key_id"], record["team"]), record["cost_pico"])
                    rolling.cursors[day] = rows[-1][0].decode()
                day += timedelta(days=1)
            return rolling.window(begin, end.timestamp())

    async def _entries(self, start: datetime, end: datetime, first: str) -> AsyncIterator[list[Any]]:
        """The stream entries of the days from `start` to `end`, each day's from entry id `first`
        on, in pages of at most PAGE."""
        oldest = (datetime.now(UTC) - timedelta(days=self._config.kept_days(False) + 1)).date()
        day, last = max(start.astimezone(UTC).date(), oldest), end.astimezone(UTC).date()
        while day <= last:
            async for rows in self._day_entries(day, first):
                yield rows
            day += timedelta(days=1)

    async def _day_entries(self, day: date, first: str) -> AsyncIterator[list[Any]]:
        """One day's stream entries from entry id `first` on (`(id`: after it), in pages of at
        most PAGE (none: an empty page is never yielded)."""
        cursor = first
        while True:
            rows = await self._redis.xrange(self.key(day), min=cursor, max="+", count=PAGE)
            if rows:
                yield rows
            if len(rows) < PAGE:
                return
            cursor = "(" + rows[-1][0].decode()
