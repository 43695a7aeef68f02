"""Batches and files in PostgreSQL, the system of record (`database_url`): kept across restarts and
shared by every process and replica on the same database and schema. Tables `batches`,
`batch_files`, `batch_claims` and `batch_polls` (migration 0005_batches).

Each compare-and-set, claim and poll turn is one statement, atomic by PostgreSQL's row locks (an
UPDATE ... WHERE version = $n re-checks the row a concurrent writer just committed; an INSERT ...
ON CONFLICT DO UPDATE ... WHERE re-checks the lease), and every time compared is the database's
clock (`now()`), the same for every replica. Expired files and settled batches are purged a few
at a time by the writes that add new ones.

Every method raises ServiceUnavailable (503) when PostgreSQL cannot be reached or fails, as the
other PostgreSQL stores do (`gateway.access.keys_pg`).
"""

from __future__ import annotations

import uuid
from typing import Any

from gateway.access.keys_pg import database_errors, unavailable
from gateway.batches.records import BatchRecord, FileRecord
from gateway.database.pool import Database

__all__ = ["PgBatchStore"]

_ACQUIRE_S = 10.0  # waiting for a pooled connection
_PURGE_ROWS = 100  # expired rows deleted by one write at most (bounded work on the request's path)

_PUT_FILE = f"""
WITH gone AS (
    DELETE FROM batch_files WHERE id IN (
        SELECT id FROM batch_files WHERE expires_at <= now() AND id <> $1
        ORDER BY expires_at LIMIT {_PURGE_ROWS} FOR UPDATE SKIP LOCKED))
INSERT INTO batch_files (id, owner, created_at, expires_at, meta, content)
VALUES ($1, $2, $3, to_timestamp($4), $5, $6)
ON CONFLICT (id) DO UPDATE SET owner = EXCLUDED.owner, created_at = EXCLUDED.created_at,
    expires_at = EXCLUDED.expires_at, meta = EXCLUDED.meta, content = EXCLUDED.content
"""

_ADD = f"""
WITH gone AS (
    DELETE FROM batches WHERE id IN (
        SELECT id FROM batches WHERE expires_at <= now() AND id <> $1
        ORDER BY expires_at LIMIT {_PURGE_ROWS} FOR UPDATE SKIP LOCKED))
INSERT INTO batches (id, owner, version, settled, expires_at, data) VALUES ($1, $2, 1, false, NULL, $3)
"""

# $4: the version expected (NULL: any, a forced write); $5: the retention in seconds.
_WRITE = """
UPDATE batches SET data = $2, version = version + 1, settled = $3,
    expires_at = CASE WHEN $3 THEN now() + make_interval(secs => $5) END
WHERE id = $1 AND ($4::bigint IS NULL OR version = $4::bigint)
RETURNING version
"""

_LIST = """
SELECT data, version FROM batches
WHERE owner = $1 AND (expires_at IS NULL OR expires_at > now())
  AND seq < coalesce((SELECT seq FROM batches WHERE id = $2 AND owner = $1), 9223372036854775807)
ORDER BY seq DESC LIMIT $3
"""

_CLAIM = """
INSERT INTO batch_claims (id, token, until) VALUES ($1, $2, now() + make_interval(secs => $3))
ON CONFLICT (id) DO UPDATE SET token = EXCLUDED.token, until = EXCLUDED.until
WHERE batch_claims.until <= now()
RETURNING token
"""

_POLL_TURN = """
INSERT INTO batch_polls (name, until) VALUES ('poll', now() + make_interval(secs => $1))
ON CONFLICT (name) DO UPDATE SET until = EXCLUDED.until
WHERE batch_polls.until <= now()
RETURNING name
"""


class PgBatchStore:
    def __init__(self, database: Database, ttl_s: int) -> None:
        self._db = database
        self._ttl = float(ttl_s)

    async def _run(self, method: str, query: str, *args: Any) -> Any:
        """`method` (fetch, fetchrow, fetchval, execute) of one pooled connection; ServiceUnavailable
        when PostgreSQL cannot take it."""
        try:
            pool = await self._db.pool()
            async with pool.acquire(timeout=_ACQUIRE_S) as conn:
                return await getattr(conn, method)(query, *args)
        except database_errors() as exc:
            raise unavailable(exc) from exc

    async def put_file(self, record: FileRecord, content: bytes) -> None:
        await self._run("execute", _PUT_FILE, record.id, record.owner, record.created_at, float(record.expires_at),
                        record.encode(), content)

    async def _file_column(self, file_id: str, column: str) -> bytes | None:
        found = await self._run("fetchval", f"SELECT {column} FROM batch_files "  # noqa: S608
                                "WHERE id = $1 AND expires_at > now()", file_id)
        return None if found is None else bytes(found)

    async def get_file(self, file_id: str) -> FileRecord | None:
        raw = await self._file_column(file_id, "meta")
        return None if raw is None else FileRecord.decode(raw)

    async def file_content(self, file_id: str) -> bytes | None:
        return await self._file_column(file_id, "content")

    async def list_files(self, owner: str, limit: int) -> list[FileRecord]:
        rows = await self._run("fetch", "SELECT meta FROM batch_files WHERE owner = $1 AND expires_at > now() "
                               "ORDER BY created_at DESC, seq DESC LIMIT $2", owner, limit)
        return [FileRecord.decode(bytes(row["meta"])) for row in rows]

    async def delete_file(self, record: FileRecord) -> None:
        await self._run("execute", "DELETE FROM batch_files WHERE id = $1", record.id)

    async def add(self, record: BatchRecord) -> BatchRecord:
        await self._run("execute", _ADD, record.id, record.owner, record.encode())
        record.version = 1
        return record

    async def get(self, batch_id: str) -> BatchRecord | None:
        row = await self._run("fetchrow", "SELECT data, version FROM batches WHERE id = $1 AND "
                              "(expires_at IS NULL OR expires_at > now())", batch_id)
        return None if row is None else BatchRecord.decode(bytes(row["data"]), int(row["version"]))

    async def write(self, record: BatchRecord, force: bool = False) -> BatchRecord | None:
        version = await self._run("fetchval", _WRITE, record.id, record.encode(), record.settled,
                                  None if force else record.version, self._ttl)
        if version is None:
            return None
        record.version = int(version)
        return record

    async def list_batches(self, owner: str, after: str | None, limit: int) -> tuple[list[BatchRecord], bool]:
        rows = await self._run("fetch", _LIST, owner, after, limit + 1)
        page = [BatchRecord.decode(bytes(row["data"]), int(row["version"])) for row in rows]
        return page[:limit], len(page) > limit

    async def pending(self) -> list[str]:
        return [str(row["id"]) for row in await self._run("fetch", "SELECT id FROM batches WHERE NOT settled")]

    async def claim(self, batch_id: str, lease_s: float) -> str | None:
        token = uuid.uuid4().hex
        taken = await self._run("fetchval", _CLAIM, batch_id, token, max(float(lease_s), 0.001))
        return token if taken == token else None

    async def unclaim(self, batch_id: str, token: str) -> None:
        await self._run("execute", "DELETE FROM batch_claims WHERE id = $1 AND token = $2", batch_id, token)

    async def poll_turn(self, interval_s: float) -> bool:
        # (a little less than the interval: the next turn is never missed by a hair)
        taken = await self._run("fetchval", _POLL_TURN, max(interval_s - 0.05, 0.001))
        return taken is not None
