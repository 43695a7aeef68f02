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
    values = {k.decode(): json.loads(v) for k, v in raw.items()}
    for name in ("created_at", "expires_at"):
        if values.get(name) is not None:
            values[name] = datetime.fromisoformat(values[name])
    for name in ("models", "tiers"):
        if values.get(name) is not None:
            values[name] = tuple(values[name])
    return VirtualKey(**values)


def _decode_team(raw: dict[bytes, bytes]) -> Team | None:
    return Team(**{k.decode(): json.loads(v) for k, v in raw.items()}) if raw else None


class RedisKeyStore:
    def __init__(self, redis: Any, prefix: str = "gw", cache_ttl_s: float = 1.0) -> None:
        self._redis = redis
        self._prefix = f"{prefix}:{{gw-keys}}"
        self._ttl = cache_ttl_s
        self._update = redis.register_script(_UPDATE_LUA)
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
