"""Virtual keys and teams in the embedded SQLite store (`gateway.database.sqlite`): the same record
as `gateway.access.keys_pg` (tables `virtual_keys`, `teams`), behind the same methods, so
`RecordedKeyStore` serves keys from either (each process remembers a key for `key_cache_ttl_s`).

Only a secret's SHA-256 is stored. Every change takes a new `revision` (one counter for keys and
teams) and sets `updated_at`. Every method raises ServiceUnavailable (503) when the file cannot be
read or written.
"""

from __future__ import annotations

import builtins
import json
import sqlite3
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from gateway.access.keys import Team, VirtualKey
from gateway.access.keys_pg import KeyRow, TeamRow
from gateway.database.sqlite import Sqlite

__all__ = ["SqliteKeys"]

_KEY_COLUMNS = ("id, secret_hash, created_at, alias, team, user_name, models, tiers, budget_pico, budget_period, rpm, "
                "tpm, expires_at, revoked, revision, updated_at")
_TEAM_COLUMNS = "name, budget_pico, budget_period, revision, updated_at"
_CHANGEABLE = frozenset({"alias", "team", "user", "models", "tiers", "budget_pico", "budget_period", "rpm", "tpm",
                         "expires_at", "revoked"})


def _iso(at: datetime | None) -> str | None:
    """A fixed-width UTC form (microseconds always), so that times sort as strings."""
    return at.astimezone(UTC).isoformat(timespec="microseconds") if at is not None else None


def _when(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text is not None else None


def _names(text: str | None) -> tuple[str, ...] | None:
    return tuple(json.loads(text)) if text is not None else None


def _value(name: str, value: Any) -> Any:
    """A VirtualKey field's value as stored."""
    if name in ("models", "tiers"):
        return json.dumps(list(value)) if value is not None else None
    if name == "expires_at":
        return _iso(value)
    return int(value) if name == "revoked" else value


def _key_row(row: sqlite3.Row) -> KeyRow:
    key = VirtualKey(
        id=row["id"], created_at=datetime.fromisoformat(row["created_at"]), alias=row["alias"], team=row["team"],
        user=row["user_name"], models=_names(row["models"]), tiers=_names(row["tiers"]),
        budget_pico=row["budget_pico"], budget_period=row["budget_period"], rpm=row["rpm"], tpm=row["tpm"],
        expires_at=_when(row["expires_at"]), revoked=bool(row["revoked"]))
    return KeyRow(key, row["secret_hash"], row["revision"], datetime.fromisoformat(row["updated_at"]))


def _team_row(row: sqlite3.Row) -> TeamRow:
    team = Team(name=row["name"], budget_pico=row["budget_pico"], budget_period=row["budget_period"])
    return TeamRow(team, row["revision"], datetime.fromisoformat(row["updated_at"]))


def _revision(conn: sqlite3.Connection) -> int:
    """The next revision (inside a write transaction)."""
    conn.execute("UPDATE access_revisions SET n = n + 1")
    return int(conn.execute("SELECT n FROM access_revisions").fetchone()[0])


def _now() -> str:
    return _iso(datetime.now(UTC)) or ""


class SqliteKeys:
    def __init__(self, store: Sqlite) -> None:
        self._store = store

    async def insert(self, key: VirtualKey, secret_hash: str) -> KeyRow:
        def work(conn: sqlite3.Connection) -> KeyRow:
            values = [_value(f, getattr(key, f)) for f in ("alias", "team", "user", "models", "tiers", "budget_pico",
                                                            "budget_period", "rpm", "tpm", "expires_at", "revoked")]
            conn.execute(f"INSERT INTO virtual_keys ({_KEY_COLUMNS}) VALUES ({', '.join('?' * 16)})",
                         (key.id, secret_hash, _iso(key.created_at), *values, _revision(conn), _now()))
            return _key_row(conn.execute(f"SELECT {_KEY_COLUMNS} FROM virtual_keys WHERE id = ?", (key.id,))
                            .fetchone())

        return await self._store.write(work)

    async def _key(self, column: str, value: str) -> KeyRow | None:
        row = await self._store.read(
            lambda conn: conn.execute(f"SELECT {_KEY_COLUMNS} FROM virtual_keys WHERE {column} = ?", (value,))
            .fetchone())
        return _key_row(row) if row is not None else None

    async def get(self, key_id: str) -> KeyRow | None:
        return await self._key("id", key_id)

    async def by_hash(self, secret_hash: str) -> KeyRow | None:
        return await self._key("secret_hash", secret_hash)

    async def list(self) -> builtins.list[VirtualKey]:
        rows = await self._store.read(
            lambda conn: conn.execute(f"SELECT {_KEY_COLUMNS} FROM virtual_keys ORDER BY created_at, id").fetchall())
        return [_key_row(r).key for r in rows]

    async def change(self, key_id: str, changes: Mapping[str, Any]) -> KeyRow | None:
        """Apply already validated changes (`clean_fields`, or `revoked`); None for an unknown id."""
        unknown = set(changes) - _CHANGEABLE
        if unknown:
            raise ValueError(f"not a changeable key field: {sorted(unknown)[0]}")
        names = list(changes)
        sets = [f"{'user_name' if n == 'user' else n} = ?" for n in names]
        if changes.get("revoked"):
            sets.append("revoked_at = coalesce(revoked_at, ?)")

        def work(conn: sqlite3.Connection) -> KeyRow | None:
            now = _now()
            extra = [now] if changes.get("revoked") else []
            conn.execute(f"UPDATE virtual_keys SET {', '.join([*sets, 'revision = ?', 'updated_at = ?'])} WHERE id = ?",
                         (*(_value(n, changes[n]) for n in names), *extra, _revision(conn), now, key_id))
            row = conn.execute(f"SELECT {_KEY_COLUMNS} FROM virtual_keys WHERE id = ?", (key_id,)).fetchone()
            return _key_row(row) if row is not None else None

        return await self._store.write(work)

    async def set_team(self, team: Team) -> TeamRow:
        def work(conn: sqlite3.Connection) -> TeamRow:
            now = _now()
            conn.execute(
                f"INSERT INTO teams ({_TEAM_COLUMNS}, created_at) VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (name) DO UPDATE SET budget_pico = excluded.budget_pico,"
                " budget_period = excluded.budget_period, revision = excluded.revision,"
                " updated_at = excluded.updated_at",
                (team.name, team.budget_pico, team.budget_period, _revision(conn), now, now))
            return _team_row(conn.execute(f"SELECT {_TEAM_COLUMNS} FROM teams WHERE name = ?", (team.name,))
                             .fetchone())

        return await self._store.write(work)

    async def get_team(self, name: str) -> TeamRow | None:
        row = await self._store.read(
            lambda conn: conn.execute(f"SELECT {_TEAM_COLUMNS} FROM teams WHERE name = ?", (name,)).fetchone())
        return _team_row(row) if row is not None else None

    async def list_teams(self) -> builtins.list[Team]:
        rows = await self._store.read(
            lambda conn: conn.execute(f"SELECT {_TEAM_COLUMNS} FROM teams ORDER BY name").fetchall())
        return [_team_row(r).team for r in rows]

    async def changed_since(self, since: datetime) -> tuple[builtins.list[KeyRow], builtins.list[TeamRow]]:
        """Keys and teams changed at or after `since`, oldest change first."""
        def work(conn: sqlite3.Connection) -> tuple[builtins.list[Any], builtins.list[Any]]:
            after = (_iso(since),)
            return (conn.execute(f"SELECT {_KEY_COLUMNS} FROM virtual_keys WHERE updated_at >= ? ORDER BY updated_at",
                                 after).fetchall(),
                    conn.execute(f"SELECT {_TEAM_COLUMNS} FROM teams WHERE updated_at >= ? ORDER BY updated_at",
                                 after).fetchall())

        keys, teams = await self._store.read(work)
        return [_key_row(r) for r in keys], [_team_row(r) for r in teams]

    async def now(self) -> datetime:
        """The clock `updated_at` is written with (this machine's)."""
        return datetime.now(UTC)
