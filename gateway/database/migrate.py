"""Versioned schema migrations: `migrations/NNNN_name.sql`, applied in order, each once, each in
its own transaction, recorded in `schema_migrations`. Replicas starting together take turns (a
PostgreSQL advisory lock), so a migration never runs twice. `gateway db upgrade` runs them, and
the app does at start-up when `database.migrate_on_start` is set."""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

from gateway.database.pool import Database

__all__ = ["Migration", "migrations", "pending", "upgrade"]

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_LOCK = 0x6761_7465_7761_79  # pg_advisory_lock key: "gateway"


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    """Every migration shipped with this version, in order."""
    found = []
    for entry in resources.files("gateway.database.migrations").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text()))
    found.sort(key=lambda m: m.version)
    if len({m.version for m in found}) != len(found):
        raise RuntimeError("two migrations share a version number")
    return found


async def _applied(conn: Any) -> set[int]:
    await conn.execute("""CREATE TABLE IF NOT EXISTS schema_migrations (
        version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())""")
    return {row["version"] for row in await conn.fetch("SELECT version FROM schema_migrations")}


async def pending(database: Database) -> list[Migration]:
    pool = await database.pool()
    async with pool.acquire() as conn:
        done = await _applied(conn)
    return [m for m in migrations() if m.version not in done]


async def upgrade(database: Database) -> list[Migration]:
    """Apply what is pending; returns what was applied (nothing when up to date)."""
    applied: list[Migration] = []
    conn = await database.connect()  # (the advisory lock is session state: never on a pooled connection)
    try:
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {_identifier(database.schema)}")
        await conn.execute("SELECT pg_advisory_lock($1)", _LOCK)
        try:
            done = await _applied(conn)
            for migration in migrations():
                if migration.version in done:
                    continue
                async with conn.transaction():
                    await conn.execute(migration.sql)
                    await conn.execute("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                                       migration.version, migration.name)
                applied.append(migration)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK)
    finally:
        await conn.close()
    return applied


def _identifier(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", name):
        raise ValueError(f"not a plain SQL identifier: {name!r}")
    return name
