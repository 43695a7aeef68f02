"""Where batches and files are kept: PostgreSQL with `database_url` (the system of record, with
or without Redis: `store_pg.py`, chosen in `gateway.app`), else Redis (every process and replica
shares them: `store_redis.py`), else the SQLite file of the embedded default (the processes of one
machine: `store_sqlite.py`), else this process's memory (one process: docs/batches.md).

A batch is written by compare-and-set on its version (`write`), so a status refresh never
overwrites a newer state; the one settlement of a batch is claimed (`claim`: at most one
holder at a time, for a lease) and written with `force`. Files and finished batches are kept
for `batches.file_ttl_s`; a batch stays until it is settled.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import replace
from typing import Any, NamedTuple, Protocol

from gateway.batches.records import BatchRecord, FileRecord
from gateway.config.settings import Settings
from gateway.database.sqlite import Sqlite

__all__ = ["BatchStore", "MemoryBatchStore", "build_store"]


class BatchStore(Protocol):
    async def put_file(self, record: FileRecord, content: bytes) -> None: ...

    async def get_file(self, file_id: str) -> FileRecord | None: ...

    async def file_content(self, file_id: str) -> bytes | None: ...

    async def list_files(self, owner: str, limit: int) -> list[FileRecord]:
        """The owner's files, newest first."""
        ...

    async def delete_file(self, record: FileRecord) -> None: ...

    async def add(self, record: BatchRecord) -> BatchRecord:
        """A new batch (pending until settled), with its first version."""
        ...

    async def get(self, batch_id: str) -> BatchRecord | None: ...

    async def write(self, record: BatchRecord, force: bool = False) -> BatchRecord | None:
        """Store `record` if the stored one is still at `record.version` (always, with `force`):
        the record at its new version, else None (written meanwhile: read it again). A settled
        record leaves the pending set and expires after the retention."""
        ...

    async def list_batches(self, owner: str, after: str | None, limit: int) -> tuple[list[BatchRecord], bool]:
        """The owner's batches, newest first, after the batch `after`; and whether more follow."""
        ...

    async def pending(self) -> list[str]:
        """The batches not settled yet."""
        ...

    async def claim(self, batch_id: str, lease_s: float) -> str | None:
        """A token if this caller may settle the batch now (no one else holds it), else None."""
        ...

    async def unclaim(self, batch_id: str, token: str) -> None: ...

    async def poll_turn(self, interval_s: float) -> bool:
        """Whether this process polls the upstreams now (one process per interval)."""
        ...


class _Kept(NamedTuple):
    until: float | None  # expiry (settled batches)
    raw: bytes
    version: int
    owner: str
    created_at: int
    settled: bool


class MemoryBatchStore:
    """One process's batches and files (kept encoded: what a caller changes is not the store's
    until written)."""

    def __init__(self, ttl_s: float) -> None:
        self._ttl = ttl_s
        self._files: dict[str, tuple[FileRecord, bytes]] = {}
        self._batches: dict[str, _Kept] = {}
        self._claims: dict[str, tuple[str, float]] = {}  # batch id -> (token, until)

    def _purge(self) -> None:
        now = time.time()
        for file_id in [f for f, (record, _) in self._files.items() if record.expires_at <= now]:
            del self._files[file_id]
        for batch_id in [b for b, kept in self._batches.items() if kept.until is not None and kept.until <= now]:
            del self._batches[batch_id]

    async def put_file(self, record: FileRecord, content: bytes) -> None:
        self._purge()
        self._files[record.id] = (record, content)

    async def get_file(self, file_id: str) -> FileRecord | None:
        found = self._files.get(file_id)
        return found[0] if found is not None and found[0].expires_at > time.time() else None

    async def file_content(self, file_id: str) -> bytes | None:
        found = self._files.get(file_id)
        return found[1] if found is not None and found[0].expires_at > time.time() else None

    async def list_files(self, owner: str, limit: int) -> list[FileRecord]:
        self._purge()
        mine = [record for record, _ in self._files.values() if record.owner == owner]
        return sorted(mine, key=lambda r: r.created_at, reverse=True)[:limit]

    async def delete_file(self, record: FileRecord) -> None:
        self._files.pop(record.id, None)

    def _keep(self, record: BatchRecord, version: int) -> BatchRecord:
        until = time.time() + self._ttl if record.settled else None
        self._batches[record.id] = _Kept(until, record.encode(), version, record.owner, record.created_at,
                                         record.settled)
        return replace(record, version=version)

    async def add(self, record: BatchRecord) -> BatchRecord:
        self._purge()
        return self._keep(record, 1)

    async def get(self, batch_id: str) -> BatchRecord | None:
        kept = self._batches.get(batch_id)
        if kept is None or (kept.until is not None and kept.until <= time.time()):
            return None
        return BatchRecord.decode(kept.raw, kept.version)

    async def write(self, record: BatchRecord, force: bool = False) -> BatchRecord | None:
        kept = self._batches.get(record.id)
        if kept is None or (not force and kept.version != record.version):
            return None
        return self._keep(record, kept.version + 1)

    async def list_batches(self, owner: str, after: str | None, limit: int) -> tuple[list[BatchRecord], bool]:
        ids = [b for b, kept in reversed(self._batches.items()) if kept.owner == owner]  # newest first
        start = ids.index(after) + 1 if after in ids else 0
        page = [BatchRecord.decode(self._batches[b].raw, self._batches[b].version) for b in ids[start:start + limit]]
        return page, len(ids) > start + limit

    async def pending(self) -> list[str]:
        return [b for b, kept in self._batches.items() if not kept.settled]

    async def claim(self, batch_id: str, lease_s: float) -> str | None:
        now = time.monotonic()
        held = self._claims.get(batch_id)
        if held is not None and held[1] > now:
            return None
        token = uuid.uuid4().hex
        self._claims[batch_id] = (token, now + lease_s)
        return token

    async def unclaim(self, batch_id: str, token: str) -> None:
        held = self._claims.get(batch_id)
        if held is not None and held[0] == token:
            del self._claims[batch_id]

    async def poll_turn(self, interval_s: float) -> bool:
        return True  # (one process)


def build_store(settings: Settings, redis: Any, sqlite: Sqlite | None = None) -> BatchStore:
    """Without PostgreSQL (which `gateway.app` prefers): Redis when configured (shared by every
    process and replica), else the SQLite file when it keeps the records (the processes of one
    machine), else this process's memory (docs/batches.md)."""
    ttl = settings.batches.file_ttl_s
    if redis is not None:
        from gateway.batches.store_redis import RedisBatchStore

        return RedisBatchStore(redis, settings.redis_prefix, ttl)
    if sqlite is not None:
        from gateway.batches.store_sqlite import SqliteBatchStore

        return SqliteBatchStore(sqlite, ttl)
    return MemoryBatchStore(ttl)
