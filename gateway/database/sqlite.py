"""The embedded system of record: one SQLite file (stdlib `sqlite3`) keeps the keys, teams, settled
spend, budget holds and the ledger of a gateway that has neither PostgreSQL nor Redis, so one
machine's gateway keeps them across restarts (tables: `sqlite_schema`).

No statement ever runs on the event loop: every call hands a function of the connection to one
thread of this object's own and awaits its result. `write` runs it in one `BEGIN IMMEDIATE`
transaction: the file's write lock is taken first, so what the function reads and what it writes
are one atomic step, also against the other processes using the file.

Several processes may share the file (`gateway serve --workers N` on one machine): it is in WAL
mode (readers never wait for a writer), and a writer waits up to `timeout_s` for another's
transaction (SQLite's busy timeout). `synchronous=NORMAL`: a committed transaction survives a crash
of the process; a power cut may lose the last ones, never the file. The file and its directory are
created on first use, readable by their owner only.

A failure (the file unreadable, the disk full, the lock not had within `timeout_s`) raises
ServiceUnavailable.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from gateway.database.sqlite_schema import SCHEMA, UPGRADES, VERSION
from gateway.errors import ServiceUnavailable

__all__ = ["Sqlite"]

T = TypeVar("T")
Work = Callable[[sqlite3.Connection], T]


class Sqlite:
    def __init__(self, path: str | os.PathLike[str], timeout_s: float = 5.0) -> None:
        self.path = Path(path)
        self._timeout = timeout_s
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gateway-sqlite")
        self._conn: sqlite3.Connection | None = None  # used on that thread only

    async def open(self) -> None:
        """Create the file (and its directory) and its tables if need be; ServiceUnavailable if not."""
        await self.read(lambda _: None)

    async def read(self, work: Work[T]) -> T:
        """`work(connection)` on the store's thread (each statement its own transaction)."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._call, work, False)

    async def write(self, work: Work[T]) -> T:
        """`work(connection)` on the store's thread, in one BEGIN IMMEDIATE transaction: committed
        when it returns, rolled back when it raises."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._call, work, True)

    async def close(self) -> None:
        if self._conn is not None:
            await asyncio.get_running_loop().run_in_executor(self._thread, self._close)
        self._thread.shutdown(wait=False)

    def _close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            conn.close()

    def _call(self, work: Work[T], transaction: bool) -> T:
        try:
            if self._conn is None:
                self._conn = self._connect()
            return _transaction(self._conn, work) if transaction else work(self._conn)
        except (sqlite3.Error, OSError) as exc:
            raise ServiceUnavailable(f"the SQLite store ({self.path}) is unavailable: {exc}") from exc

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not self.path.exists():  # owner only: it holds key hashes, budgets and the ledger
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        conn = sqlite3.connect(self.path, timeout=self._timeout, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if version > VERSION:
                raise sqlite3.DatabaseError(f"schema version {version} was written by a newer gateway "
                                            f"(this one knows {VERSION})")
            if version < VERSION:
                conn.executescript(f"BEGIN IMMEDIATE;{SCHEMA}COMMIT;")  # (version 1: idempotent)
                _transaction(conn, _upgrade)
        except BaseException:
            conn.close()
            raise
        return conn


def _upgrade(conn: sqlite3.Connection) -> None:
    """From the version the file has now (read under the write lock: another process may just
    have upgraded it) to `VERSION`."""
    version = max(int(conn.execute("PRAGMA user_version").fetchone()[0]), 1)
    for step in range(version + 1, VERSION + 1):
        for statement in UPGRADES[step]:
            conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {VERSION}")


def _transaction(conn: sqlite3.Connection, work: Work[T]) -> T:
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = work(conn)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return result
