"""Virtual keys and teams in PostgreSQL, their system of record (tables: migration 0003_access).

Only a secret's SHA-256 is stored (`secret_hash`), as in every key store. Every change takes a new
`revision` (one sequence for keys and teams), so a cached copy can refuse to be overwritten by an
older one, and sets `updated_at`, which `changed_since` reads to re-sync a cache.

Every method raises ServiceUnavailable (503) when PostgreSQL cannot be reached or fails.
"""

from __future__ import annotations

import builtins
from collections.abc import Awaitable, Mapping
from datetime import datetime
from typing import Any, NamedTuple, TypeVar

from gateway.access.keys import Team, VirtualKey
from gateway.database.pool import Database
from gateway.errors import ServiceUnavailable

__all__ = ["KeyRow", "PgKeys", "TeamRow", "database_errors", "unavailable"]

T = TypeVar("T")

_KEY_COLUMNS = ("id, secret_hash, created_at, alias, team, user_name, models, tiers, budget_pico, budget_period, rpm, "
                "tpm, expires_at, revoked, revision, updated_at")
_TEAM_COLUMNS = "name, budget_pico, budget_period, revision, updated_at"
_CHANGEABLE = frozenset({"alias", "team", "user", "models", "tiers", "budget_pico", "budget_period", "rpm", "tpm",
                         "expires_at", "revoked"})


class KeyRow(NamedTuple):
    key: VirtualKey
    secret_hash: str
    revision: int
    updated_at: datetime


class TeamRow(NamedTuple):
    team: Team
    revision: int
    updated_at: datetime


def database_errors() -> tuple[type[BaseException], ...]:
    """What a PostgreSQL call raises when the database is down, unreachable or failing."""
    import asyncpg

    return (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError, ServiceUnavailable)


def unavailable(exc: BaseException) -> ServiceUnavailable:
    if isinstance(exc, ServiceUnavailable):
        return exc
    return ServiceUnavailable(f"the database (PostgreSQL) is unavailable: {type(exc).__name__}")


def _column(field: str) -> str:
    """A VirtualKey field's column (`user` is a reserved word in SQL)."""
    return "user_name" if field == "user" else field


def _names(value: list[str] | None) -> tuple[str, ...] | None:
    return tuple(value) if value is not None else None


def _key_row(row: Mapping[str, Any]) -> KeyRow:
    key = VirtualKey(
        id=row["id"], created_at=row["created_at"], alias=row["alias"], team=row["team"], user=row["user_name"],
        models=_names(row["models"]), tiers=_names(row["tiers"]), budget_pico=row["budget_pico"],
        budget_period=row["budget_period"], rpm=row["rpm"], tpm=row["tpm"], expires_at=row["expires_at"],
        revoked=row["revoked"])
    return KeyRow(key, row["secret_hash"], row["revision"], row["updated_at"])


def _team_row(row: Mapping[str, Any]) -> TeamRow:
    team = Team(name=row["name"], budget_pico=row["budget_pico"], budget_period=row["budget_period"])
    return TeamRow(team, row["revision"], row["updated_at"])


def _value(name: str, value: Any) -> Any:
    return list(value) if name in ("models", "tiers") and value is not None else value


class PgKeys:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def _call(self, work: Awaitable[T]) -> T:
        try:
            return await work
        except database_errors() as exc:
            raise unavailable(exc) from exc

    async def _fetch(self, query: str, *args: Any) -> list[Any]:
        async def run() -> list[Any]:
            return list(await (await self._db.pool()).fetch(query, *args))

        return await self._call(run())

    async def _fetchrow(self, query: str, *args: Any) -> Any:
        rows = await self._fetch(query, *args)
        return rows[0] if rows else None

    async def insert(self, key: VirtualKey, secret_hash: str) -> KeyRow:
        row = await self._fetchrow(
            f"INSERT INTO virtual_keys (id, secret_hash, created_at, alias, team, user_name, models, tiers,"
            f" budget_pico, budget_period, rpm, tpm, expires_at, revoked) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9,"
            f" $10, $11, $12, $13, $14) RETURNING {_KEY_COLUMNS}",
            key.id, secret_hash, key.created_at, key.alias, key.team, key.user, _value("models", key.models),
            _value("tiers", key.tiers), key.budget_pico, key.budget_period, key.rpm, key.tpm, key.expires_at,
            key.revoked)
        return _key_row(row)

    async def get(self, key_id: str) -> KeyRow | None:
        row = await self._fetchrow(f"SELECT {_KEY_COLUMNS} FROM virtual_keys WHERE id = $1", key_id)
        return _key_row(row) if row is not None else None

    async def by_hash(self, secret_hash: str) -> KeyRow | None:
        row = await self._fetchrow(f"SELECT {_KEY_COLUMNS} FROM virtual_keys WHERE secret_hash = $1", secret_hash)
        return _key_row(row) if row is not None else None

    async def list(self) -> builtins.list[VirtualKey]:
        rows = await self._fetch(f"SELECT {_KEY_COLUMNS} FROM virtual_keys ORDER BY created_at, id")
        return [_key_row(r).key for r in rows]

    async def change(self, key_id: str, changes: Mapping[str, Any]) -> KeyRow | None:
        """Apply already validated changes (`clean_fields`, or `revoked`); None for an unknown id."""
        unknown = set(changes) - _CHANGEABLE
        if unknown:
            raise ValueError(f"not a changeable key field: {sorted(unknown)[0]}")
        names = list(changes)
        sets = [f"{_column(n)} = ${i}" for i, n in enumerate(names, 2)]
        if changes.get("revoked"):
            sets.append("revoked_at = coalesce(revoked_at, now())")
        sets += ["revision = nextval('access_revisions')", "updated_at = now()"]
        row = await self._fetchrow(f"UPDATE virtual_keys SET {', '.join(sets)} WHERE id = $1 RETURNING {_KEY_COLUMNS}",
                                   key_id, *(_value(n, changes[n]) for n in names))
        return _key_row(row) if row is not None else None

    async def set_team(self, team: Team) -> TeamRow:
        row = await self._fetchrow(
            f"INSERT INTO teams (name, budget_pico, budget_period) VALUES ($1, $2, $3) ON CONFLICT (name) DO UPDATE"
            f" SET budget_pico = EXCLUDED.budget_pico, budget_period = EXCLUDED.budget_period,"
            f" revision = nextval('access_revisions'), updated_at = now() RETURNING {_TEAM_COLUMNS}",
            team.name, team.budget_pico, team.budget_period)
        return _team_row(row)

    async def get_team(self, name: str) -> TeamRow | None:
        row = await self._fetchrow(f"SELECT {_TEAM_COLUMNS} FROM teams WHERE name = $1", name)
        return _team_row(row) if row is not None else None

    async def list_teams(self) -> builtins.list[Team]:
        return [_team_row(r).team for r in await self._fetch(f"SELECT {_TEAM_COLUMNS} FROM teams ORDER BY name")]

    async def changed_since(self, since: datetime) -> tuple[builtins.list[KeyRow], builtins.list[TeamRow]]:
        """Keys and teams changed at or after `since`, oldest change first."""
        keys = await self._fetch(f"SELECT {_KEY_COLUMNS} FROM virtual_keys WHERE updated_at >= $1 ORDER BY updated_at",
                                 since)
        teams = await self._fetch(f"SELECT {_TEAM_COLUMNS} FROM teams WHERE updated_at >= $1 ORDER BY updated_at",
                                  since)
        return [_key_row(r) for r in keys], [_team_row(r) for r in teams]

    async def now(self) -> datetime:
        """The database's clock (what `updated_at` is written with)."""
        row = await self._fetchrow("SELECT now() AS now")
        return row["now"]  # type: ignore[no-any-return]
