"""Virtual keys and teams with PostgreSQL as the system of record (`gateway.access.keys_pg`) and
Redis, when configured, as the authentication cache every replica shares (`RedisKeyStore`). The
embedded SQLite store (`gateway.access.keys_sqlite`) is a record of the same shape (`KeyRecord`),
served the same way without Redis.

Writes (create, update, revoke, set_team) go to PostgreSQL first, then to Redis. Authentication
reads, in order: this process's memory (`cache_ttl_s`), Redis, PostgreSQL; a key found only in
PostgreSQL is copied back to Redis, never over a record Redis already holds (so a revoke that
lands meanwhile is not undone). A Redis flush, restart or eviction therefore never makes a key
unknown, and never un-revokes one: what Redis lost is read again from PostgreSQL.

Redis can also keep an outdated copy: a write that reached PostgreSQL but not Redis, or a Redis
restored from an older snapshot. `run` re-syncs it every `sync_interval_s`: it copies the
records PostgreSQL changed since the watermark stored in Redis itself (minus a margin for commits
that landed out of order), and moves the watermark, in one transaction. A snapshot restores
records and watermark together, so whatever changed after it is copied again; an outdated copy
is served for at most one interval. Copies carry the database's revision: an older one never
replaces a newer one.

Without Redis, PostgreSQL and this process's memory: a change made on another process takes
effect here within `cache_ttl_s`. If PostgreSQL is down too, remembered keys keep working and an
unknown one gets 503. Secrets that match no key are not remembered (no memory to fill by
guessing); each costs one indexed read.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import time
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, Protocol

from gateway.access.keys import SECRET_PREFIX, Team, VirtualKey, check_usable, clean_fields, new_key, secret_hash
from gateway.access.keys_pg import KeyRow, TeamRow
from gateway.access.keys_redis import RedisKeyStore
from gateway.errors import NotFound, ServiceUnavailable
from gateway.runtime.redis_errors import redis_errors

__all__ = ["KeyRecord", "RecordedKeyStore"]

log = logging.getLogger("gateway.access")


def _unreachable() -> tuple[type[BaseException], ...]:
    """Redis or the database unreachable."""
    return (*redis_errors(), ServiceUnavailable)


_MAX_REMEMBERED = 10_000
_MARGIN = timedelta(seconds=30)  # re-copy what changed this long before the watermark (late commits)
_FIRST_SYNC = timedelta(minutes=10)  # Redis lost its watermark: re-copy what changed this recently


class KeyRecord(Protocol):
    """The system of record of keys and teams (`PgKeys`, `SqliteKeys`)."""

    async def insert(self, key: VirtualKey, secret_hash: str) -> KeyRow: ...

    async def get(self, key_id: str) -> KeyRow | None: ...

    async def by_hash(self, secret_hash: str) -> KeyRow | None: ...

    async def list(self) -> builtins.list[VirtualKey]: ...

    async def change(self, key_id: str, changes: Mapping[str, Any]) -> KeyRow | None: ...

    async def set_team(self, team: Team) -> TeamRow: ...

    async def get_team(self, name: str) -> TeamRow | None: ...

    async def list_teams(self) -> builtins.list[Team]: ...

    async def changed_since(self, since: datetime) -> tuple[builtins.list[KeyRow], builtins.list[TeamRow]]: ...

    async def now(self) -> datetime: ...


class RecordedKeyStore:
    def __init__(self, record: KeyRecord, cache: RedisKeyStore | None = None, cache_ttl_s: float = 1.0,
                 sync_interval_s: float = 2.0) -> None:
        self._record = record
        self._cache = cache
        self._ttl = cache_ttl_s
        self._sync_interval = sync_interval_s
        self._keys: dict[str, tuple[float, VirtualKey]] = {}  # secret hash -> (read at, key)
        self._teams: dict[str, tuple[float, Team | None]] = {}

    async def create(self, **fields: Any) -> tuple[VirtualKey, str]:
        key, secret = new_key(fields)
        row = await self._record.insert(key, secret_hash(secret))
        await self._copy([row], [])
        return row.key, secret

    async def get(self, key_id: str) -> VirtualKey | None:
        row = await self._record.get(key_id)
        return row.key if row is not None else None

    async def list(self) -> builtins.list[VirtualKey]:
        return await self._record.list()

    async def update(self, key_id: str, **changes: Any) -> VirtualKey:
        return await self._change(key_id, clean_fields(changes))

    async def revoke(self, key_id: str) -> VirtualKey:
        return await self._change(key_id, {"revoked": True})

    async def _change(self, key_id: str, changes: Mapping[str, Any]) -> VirtualKey:
        row = await self._record.change(key_id, changes) if changes else await self._record.get(key_id)
        if row is None:
            raise NotFound(f"no key with id {key_id!r}")
        self._keys = {h: entry for h, entry in self._keys.items() if entry[1].id != key_id}
        if changes:
            await self._copy([row], [])
        return row.key

    async def set_team(self, team: Team) -> None:
        row = await self._record.set_team(team)
        self._teams.pop(team.name, None)
        await self._copy([], [row])

    async def get_team(self, name: str) -> Team | None:
        remembered = self._teams.get(name)
        if remembered is not None and time.monotonic() - remembered[0] < self._ttl:
            return remembered[1]
        try:
            team = await self._find_team(name)
        except ServiceUnavailable:
            if remembered is not None:
                return remembered[1]
            raise
        _remember(self._teams, name, team)
        return team

    async def list_teams(self) -> builtins.list[Team]:
        return await self._record.list_teams()

    async def authenticate(self, secret: str) -> VirtualKey:
        if not secret.startswith(SECRET_PREFIX):
            return check_usable(None)
        digest = secret_hash(secret)
        remembered = self._keys.get(digest)
        if remembered is not None and time.monotonic() - remembered[0] < self._ttl:
            return check_usable(remembered[1])
        try:
            key = await self._find(digest)
        except ServiceUnavailable:
            if remembered is not None:  # Redis and PostgreSQL both unreachable: what this process knew
                return check_usable(remembered[1])
            raise
        if key is not None:
            _remember(self._keys, digest, key)
        return check_usable(key)

    async def _find(self, digest: str) -> VirtualKey | None:
        """Redis, else PostgreSQL (copied back to Redis when Redis answered without it)."""
        cache_answered = False
        if self._cache is not None:
            try:
                key = await self._cache.lookup(digest)
                cache_answered = True
            except redis_errors() as exc:
                log.debug("key cache unavailable, reading the database: %r", exc)
            else:
                if key is not None:
                    return key
        row = await self._record.by_hash(digest)
        if row is not None and cache_answered:
            await self._copy([row], [], only_if_absent=True)
        return row.key if row is not None else None

    async def _find_team(self, name: str) -> Team | None:
        cache_answered = False
        if self._cache is not None:
            try:
                team = await self._cache.lookup_team(name)
                cache_answered = True
            except redis_errors() as exc:
                log.debug("key cache unavailable, reading the database: %r", exc)
            else:
                if team is not None:
                    return team
        row = await self._record.get_team(name)
        if row is not None and cache_answered:
            await self._copy([], [row], only_if_absent=True)
        return row.team if row is not None else None

    async def _copy(self, keys: builtins.list[KeyRow], teams: builtins.list[TeamRow], *,
                    only_if_absent: bool = False, watermark: str | None = None) -> None:
        """Write records to the Redis cache; if Redis is unreachable, the re-sync repairs it later."""
        if self._cache is None:
            return
        try:
            await self._cache.put_many([(r.key, r.secret_hash, r.revision) for r in keys],
                                       [(r.team, r.revision) for r in teams],
                                       only_if_absent=only_if_absent, watermark=watermark)
        except redis_errors() as exc:
            log.warning("key cache (Redis) not updated, the re-sync will: %r", exc)

    async def sync(self) -> int:
        """Copy to Redis what PostgreSQL changed since the watermark Redis holds; how many records."""
        if self._cache is None:
            return 0
        mark = await self._cache.watermark()
        now = await self._record.now()  # before reading: what commits later is read again (the margin)
        since = datetime.fromisoformat(mark) - _MARGIN if mark else now - _FIRST_SYNC
        keys, teams = await self._record.changed_since(since)
        await self._cache.put_many([(r.key, r.secret_hash, r.revision) for r in keys],
                                   [(r.team, r.revision) for r in teams], watermark=now.isoformat())
        return len(keys) + len(teams)

    async def run(self) -> None:
        """Re-sync the Redis cache from the record every `sync_interval_s`, until cancelled."""
        if self._cache is None:
            return
        while True:
            try:
                await self.sync()
            except _unreachable() as exc:
                log.debug("key cache re-sync deferred: %r", exc)
            await asyncio.sleep(self._sync_interval)


def _remember(memory: dict[str, tuple[float, Any]], name: str, value: Any) -> None:
    if len(memory) >= _MAX_REMEMBERED:
        memory.clear()
    memory[name] = (time.monotonic(), value)
