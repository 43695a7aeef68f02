"""Batches and files in the SQLite file (the embedded default, `gateway.database.sqlite`): kept
across restarts and shared by the processes of one machine (`--workers N`). Tables `batches`,
`batch_files`, `batch_claims` and `batch_polls` (`sqlite_schema.UPGRADES[3]`); each compare-and-
set, claim and poll turn is one BEGIN IMMEDIATE transaction, so atomic across those processes."""

from __future__ import annotations

import sqlite3
import time
import uuid

from gateway.batches.records import BatchRecord, FileRecord
from gateway.database.sqlite import Sqlite

__all__ = ["SqliteBatchStore"]


class SqliteBatchStore:
    def __init__(self, db: Sqlite, ttl_s: int) -> None:
        self._db = db
        self._ttl = ttl_s

    async def put_file(self, record: FileRecord, content: bytes) -> None:
        def put(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM batch_files WHERE expires_at <= ?", (time.time(),))
            conn.execute("INSERT OR REPLACE INTO batch_files (id, owner, created_at, expires_at, meta, content) "
                         "VALUES (?, ?, ?, ?, ?, ?)", (record.id, record.owner, record.created_at, record.expires_at,
                                                       record.encode(), content))

        await self._db.write(put)

    async def _file_column(self, file_id: str, column: str) -> bytes | None:
        def read(conn: sqlite3.Connection) -> bytes | None:
            row = conn.execute(f"SELECT {column} FROM batch_files WHERE id = ? AND expires_at > ?",  # noqa: S608
                               (file_id, time.time())).fetchone()
            return None if row is None else bytes(row[0])

        return await self._db.read(read)

    async def get_file(self, file_id: str) -> FileRecord | None:
        raw = await self._file_column(file_id, "meta")
        return None if raw is None else FileRecord.decode(raw)

    async def file_content(self, file_id: str) -> bytes | None:
        return await self._file_column(file_id, "content")

    async def list_files(self, owner: str, limit: int) -> list[FileRecord]:
        def read(conn: sqlite3.Connection) -> list[FileRecord]:
            rows = conn.execute("SELECT meta FROM batch_files WHERE owner = ? AND expires_at > ? "
                                "ORDER BY created_at DESC, rowid DESC LIMIT ?", (owner, time.time(), limit))
            return [FileRecord.decode(bytes(row[0])) for row in rows]

        return await self._db.read(read)

    async def delete_file(self, record: FileRecord) -> None:
        await self._db.write(lambda conn: conn.execute("DELETE FROM batch_files WHERE id = ?", (record.id,)))

    async def add(self, record: BatchRecord) -> BatchRecord:
        def add(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM batches WHERE expires_at <= ?", (time.time(),))
            conn.execute("INSERT INTO batches (id, owner, version, settled, expires_at, data) "
                         "VALUES (?, ?, 1, 0, NULL, ?)", (record.id, record.owner, record.encode()))

        await self._db.write(add)
        record.version = 1
        return record

    async def get(self, batch_id: str) -> BatchRecord | None:
        def read(conn: sqlite3.Connection) -> BatchRecord | None:
            row = conn.execute("SELECT data, version FROM batches WHERE id = ? AND (expires_at IS NULL OR "
                               "expires_at > ?)", (batch_id, time.time())).fetchone()
            return None if row is None else BatchRecord.decode(bytes(row[0]), int(row[1]))

        return await self._db.read(read)

    async def write(self, record: BatchRecord, force: bool = False) -> BatchRecord | None:
        def write(conn: sqlite3.Connection) -> int | None:
            row = conn.execute("SELECT version FROM batches WHERE id = ?", (record.id,)).fetchone()
            if row is None or (not force and int(row[0]) != record.version):
                return None
            version = int(row[0]) + 1
            conn.execute("UPDATE batches SET data = ?, version = ?, settled = ?, expires_at = ? WHERE id = ?",
                         (record.encode(), version, int(record.settled),
                          time.time() + self._ttl if record.settled else None, record.id))
            return version

        version = await self._db.write(write)
        if version is None:
            return None
        record.version = version
        return record

    async def list_batches(self, owner: str, after: str | None, limit: int) -> tuple[list[BatchRecord], bool]:
        def read(conn: sqlite3.Connection) -> list[BatchRecord]:
            found = conn.execute("SELECT rowid FROM batches WHERE id = ? AND owner = ?", (after, owner)).fetchone() \
                if after is not None else None
            rows = conn.execute("SELECT data, version FROM batches WHERE owner = ? AND rowid < ? AND (expires_at IS "
                                "NULL OR expires_at > ?) ORDER BY rowid DESC LIMIT ?",
                                (owner, found[0] if found else 1 << 62, time.time(), limit + 1))
            return [BatchRecord.decode(bytes(row[0]), int(row[1])) for row in rows]

        page = await self._db.read(read)
        return page[:limit], len(page) > limit

    async def pending(self) -> list[str]:
        def read(conn: sqlite3.Connection) -> list[str]:
            return [str(row[0]) for row in conn.execute("SELECT id FROM batches WHERE settled = 0")]

        return await self._db.read(read)

    async def claim(self, batch_id: str, lease_s: float) -> str | None:
        token = uuid.uuid4().hex

        def claim(conn: sqlite3.Connection) -> bool:
            now = time.time()
            row = conn.execute("SELECT until FROM batch_claims WHERE id = ?", (batch_id,)).fetchone()
            if row is not None and float(row[0]) > now:
                return False
            conn.execute("INSERT OR REPLACE INTO batch_claims (id, token, until) VALUES (?, ?, ?)",
                         (batch_id, token, now + lease_s))
            return True

        return token if await self._db.write(claim) else None

    async def unclaim(self, batch_id: str, token: str) -> None:
        await self._db.write(lambda conn: conn.execute("DELETE FROM batch_claims WHERE id = ? AND token = ?",
                                                       (batch_id, token)))

    async def poll_turn(self, interval_s: float) -> bool:
        def turn(conn: sqlite3.Connection) -> bool:
            now = time.time()
            row = conn.execute("SELECT until FROM batch_polls WHERE name = 'poll'").fetchone()
            if row is not None and float(row[0]) > now:
                return False
            conn.execute("INSERT OR REPLACE INTO batch_polls (name, until) VALUES ('poll', ?)",
                         (now + max(interval_s - 0.05, 0.001),))
            return True

        return bool(await self._db.write(turn))
