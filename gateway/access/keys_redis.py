"""Virtual keys and teams in Redis, shared by every gateway process and replica.

Layout (all under one `{gw-keys}` hash tag, so a create is one MULTI on one Cluster slot):

    <prefix>:{gw-keys}:k:<id>        hash: one JSON-encoded value per VirtualKey field
    <prefix>:{gw-keys}:h:<sha256>    the key id for a secret's SHA-256 (the secret is never stored)
    <prefix>:{gw-keys}:ids           set of key ids
    <prefix>:{gw-keys}:t:<name>      hash: one JSON-encoded value per Team field
    <prefix>:{gw-keys}:teams         set of team names

Keys and teams are records of truth, so unlike caches they carry no TTL; a revoked key stays
(revoked) for the audit trail.

`authenticate` and `get_team` sit on every request, so each process remembers answers for
`cache_ttl_s` (default 1 s): a revoke or update made on another replica takes effect there within
that time; made here, at once. Unknown secrets are never remembered (no memory to fill by
guessing). If Redis is down, remembered keys keep working (nothing can be revoked meanwhile
either); an unknown one gets 503.

With PostgreSQL as the record (`gateway.access.keys_recorded`), this store is only the shared
authentication cache: `lookup` / `lookup_team` read it, `put_many` writes records copied from the
database, each with the database's revision in a `_rev` field (an older copy never overwrites a
newer one), and the re-sync's watermark (`<prefix>:{gw-keys}:synced`) in the same transaction.
"""

from __future__ import annotations

import builtins
import dataclasses
import json
import time
from datetime import datetime
from typing import Any

from gateway.access.keys import SECRET_PREFIX, Team, VirtualKey, check_usable, clean_fields, new_key, secret_hash
from gateway.errors import NotFound
from gateway.runtime.redis_errors import redis_errors, store_unavailable

__all__ = ["RedisKeyStore"]

# KEYS[1] = record; ARGV = field, value, field, value, ...  Only an existing record is changed.
_UPDATE_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
"""
# KEYS = record, set of ids (or names)[, secret hash -> id]; ARGV = revision, '1' to write only where there
# is no record, id (or name), field, value, ...  A record holding a newer revision is kept.
_PUT_LUA = """
if KEYS[3] then redis.call('SET', KEYS[3], ARGV[3]) end
redis.call('SADD', KEYS[2], ARGV[3])
if redis.call('EXISTS', KEYS[1]) == 1 then
  local held = redis.call('HGET', KEYS[1], '_rev')
  if ARGV[2] == '1' or (held and tonumber(held) >= tonumber(ARGV[1])) then return 0 end
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], '_rev', ARGV[1], unpack(ARGV, 4))
return 1
"""
_MAX_CACHED = 10_000


def _encode(value: Any) -> str:
    if isinstance(value, datetime):
        return json.dumps(value.isoformat())
    return json.dumps(list(value) if isinstance(value, tuple) else value)


def _record(obj: VirtualKey | Team) -> dict[str, str]:
    return {f.name: _encode(getattr(obj, f.name)) for f in dataclasses.fields(obj)}


def _decode_key(raw: dict[bytes, bytes]) -> VirtualKey | None:
    if not raw:
        return None
    values = {k.decode(): json.loads(v) for k, v in raw.items() if not k.startswith(b"_")}
    for name in ("created_at", "expires_at"):
        if values.get(name) is not None:
            values[name] = datetime.fromisoformat(values[name])
    for name in ("models", "tiers"):
        if values.get(name) is not None:
            values[name] = tuple(values[name])
    return VirtualKey(**values)


def _decode_team(raw: dict[bytes, bytes]) -> Team | None:
    return Team(**{k.decode(): json.loads(v) for k, v in raw.items() if not k.startswith(b"_")}) if raw else None


class RedisKeyStore:
    def __init__(self, redis: Any, prefix: str = "gw", cache_ttl_s: float = 1.0) -> None:
        self._redis = redis
        self._prefix = f"{prefix}:{{gw-keys}}"
        self._ttl = cache_ttl_s
        self._update = redis.register_script(_UPDATE_LUA)
        self._put = redis.register_script(_PUT_LUA)
        self._keys: dict[str, tuple[float, VirtualKey]] = {}  # secret hash -> (fetched at, key)
        self._teams: dict[str, tuple[float, Team | None]] = {}

    def _k(self, *parts: str) -> str:
        return ":".join((self._prefix, *parts))

    async def create(self, **fields: Any) -> tuple[VirtualKey, str]:
        key, secret = new_key(fields)
        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(self._k("k", key.id), mapping=_record(key))
        pipe.set(self._k("h", secret_hash(secret)), key.id)
        pipe.sadd(self._k("ids"), key.id)
        await pipe.execute()
        return key, secret

    async def get(self, key_id: str) -> VirtualKey | None:
        return _decode_key(await self._redis.hgetall(self._k("k", key_id)))

    async def list(self) -> list[VirtualKey]:
        ids = sorted(i.decode() for i in await self._redis.smembers(self._k("ids")))
        pipe = self._redis.pipeline(transaction=False)
        for key_id in ids:
            pipe.hgetall(self._k("k", key_id))
        keys = [k for k in map(_decode_key, await pipe.execute()) if k is not None]
        return sorted(keys, key=lambda k: (k.created_at, k.id))

    async def update(self, key_id: str, **changes: Any) -> VirtualKey:
        return await self._change(key_id, clean_fields(changes))

    async def revoke(self, key_id: str) -> VirtualKey:
        return await self._change(key_id, {"revoked": True})

    async def _change(self, key_id: str, changes: dict[str, Any]) -> VirtualKey:
        changed = 1
        if changes:
            args = [x for name, value in changes.items() for x in (name, _encode(value))]
            changed = await self._update(keys=[self._k("k", key_id)], args=args)
        key = await self.get(key_id)
        if key is None or (changes and not changed):
            raise NotFound(f"no key with id {key_id!r}")
        self._keys = {h: entry for h, entry in self._keys.items() if entry[1].id != key_id}
        return key

    async def authenticate(self, secret: str) -> VirtualKey:
        if not secret.startswith(SECRET_PREFIX):
            return check_usable(None)
        digest = secret_hash(secret)
        cached = self._keys.get(digest)
        if cached is not None and time.monotonic() - cached[0] < self._ttl:
            return check_usable(cached[1])
        try:
            key = await self._lookup(digest)
        except redis_errors() as exc:
            if cached is not None:
                return check_usable(cached[1])
            raise store_unavailable("key store", exc) from exc
        if key is not None:
            if len(self._keys) >= _MAX_CACHED:
                self._keys.clear()
            self._keys[digest] = (time.monotonic(), key)
        return check_usable(key)

    async def _lookup(self, digest: str) -> VirtualKey | None:
        key_id = await self._redis.get(self._k("h", digest))
        return await self.get(key_id.decode()) if key_id is not None else None

    async def lookup(self, digest: str) -> VirtualKey | None:
        """The key whose secret has this SHA-256, read from Redis now (no local memory); None if
        Redis does not hold it. Raises what the Redis client raises."""
        return await self._lookup(digest)

    async def lookup_team(self, name: str) -> Team | None:
        """A team's record, read from Redis now; None if Redis does not hold it."""
        return _decode_team(await self._redis.hgetall(self._k("t", name)))

    async def put_many(self, keys: builtins.list[tuple[VirtualKey, str, int]], teams: builtins.list[tuple[Team, int]],
                       *, only_if_absent: bool = False, watermark: str | None = None) -> None:
        """Write (key, secret hash, revision) and (team, revision) records copied from the record
        of truth, and the re-sync watermark, in one transaction. A record holding a newer revision
        is kept; with `only_if_absent`, any existing record is."""
        nx = "1" if only_if_absent else "0"
        pipe = self._redis.pipeline(transaction=True)
        for key, digest, revision in keys:
            fields = [x for pair in _record(key).items() for x in pair]
            await self._put(keys=[self._k("k", key.id), self._k("ids"), self._k("h", digest)],
                            args=[revision, nx, key.id, *fields], client=pipe)
        for team, revision in teams:
            fields = [x for pair in _record(team).items() for x in pair]
            await self._put(keys=[self._k("t", team.name), self._k("teams")], args=[revision, nx, team.name, *fields],
                            client=pipe)
        if watermark is not None:
            pipe.set(self._k("synced"), watermark)
        await pipe.execute()
        changed = {key.id for key, _, _ in keys}
        self._keys = {h: entry for h, entry in self._keys.items() if entry[1].id not in changed}
        for team, _ in teams:
            self._teams.pop(team.name, None)

    async def watermark(self) -> str | None:
        """What the last re-sync from the record wrote (None: none since Redis lost it)."""
        value = await self._redis.get(self._k("synced"))
        return value.decode() if value is not None else None

    async def set_team(self, team: Team) -> None:
        pipe = self._redis.pipeline(transaction=True)
        pipe.delete(self._k("t", team.name))
        pipe.hset(self._k("t", team.name), mapping=_record(team))
        pipe.sadd(self._k("teams"), team.name)
        await pipe.execute()
        self._teams.pop(team.name, None)

    async def get_team(self, name: str) -> Team | None:
        cached = self._teams.get(name)
        if cached is not None and time.monotonic() - cached[0] < self._ttl:
            return cached[1]
        try:
            team = _decode_team(await self._redis.hgetall(self._k("t", name)))
        except redis_errors() as exc:
            if cached is not None:
                return cached[1]
            raise store_unavailable("key store", exc) from exc
        if len(self._teams) >= _MAX_CACHED:
            self._teams.clear()
        self._teams[name] = (time.monotonic(), team)
        return team

    async def list_teams(self) -> builtins.list[Team]:
        names = sorted(n.decode() for n in await self._redis.smembers(self._k("teams")))
        pipe = self._redis.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(self._k("t", name))
        return [t for t in map(_decode_team, await pipe.execute()) if t is not None]

    async def run(self) -> None:
        return None  # Redis is the record here: nothing to re-sync
