"""Batches and files in Redis, shared by every process and replica:

    <prefix>:batch:<id>            hash: data (the record's JSON), version, (expires once settled)
    <prefix>:batches:of:<owner>    sorted set: the owner's batch ids by creation time
    <prefix>:batches:pending       set: the batches not settled yet (what the pollers follow)
    <prefix>:batch-claim:<id>      the settlement's claim: one holder, for a lease
    <prefix>:batches:poll          one process polls per interval
    <prefix>:batch-file:<id>       hash: meta (JSON), content; expires after the retention
    <prefix>:batch-files:of:<owner> sorted set: the owner's file ids

Owners are hashed in key names. A write is a compare-and-set on the version (one script on one
key, so Redis Cluster takes it too).
"""

from __future__ import annotations

import hashlib
import time
import uuid
from typing import Any

from gateway.batches.records import BatchRecord, FileRecord
from gateway.runtime.redis_errors import redis_errors, store_unavailable

__all__ = ["RedisBatchStore"]

# KEYS[1] the batch; ARGV = data, the expected version ('' = any), expiry ms ('0' = none).
# Returns the new version, or 0 when the batch is gone or was written meanwhile.
_WRITE = """
local v = redis.call('HGET', KEYS[1], 'version')
if not v then return 0 end
if ARGV[2] ~= '' and v ~= ARGV[2] then return 0 end
local n = tonumber(v) + 1
redis.call('HSET', KEYS[1], 'data', ARGV[1], 'version', n)
if ARGV[3] ~= '0' then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
return n
"""

_UNCLAIM = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _owner(owner: str) -> str:
    return hashlib.sha256(owner.encode()).hexdigest()[:32]


class RedisBatchStore:
    def __init__(self, redis: Any, prefix: str, ttl_s: int) -> None:
        self._redis = redis
        self._p = prefix
        self._ttl_ms = ttl_s * 1000
        self._write = redis.register_script(_WRITE)
        self._unclaim = redis.register_script(_UNCLAIM)

    async def _run(self, command: Any) -> Any:
        try:
            return await command
        except redis_errors() as exc:
            raise store_unavailable("batch store", exc) from None

    def _batch(self, batch_id: str) -> str:
        return f"{self._p}:batch:{batch_id}"

    def _file(self, file_id: str) -> str:
        return f"{self._p}:batch-file:{file_id}"

    async def put_file(self, record: FileRecord, content: bytes) -> None:
        pipe = self._redis.pipeline(transaction=False)
        pipe.hset(self._file(record.id), mapping={"meta": record.encode(), "content": content})
        pipe.pexpireat(self._file(record.id), record.expires_at * 1000)
        owned = f"{self._p}:batch-files:of:{_owner(record.owner)}"
        pipe.zadd(owned, {record.id: time.time()})
        pipe.zremrangebyscore(owned, "-inf", time.time() - self._ttl_ms / 1000)
        pipe.pexpire(owned, self._ttl_ms)
        await self._run(pipe.execute())

    async def get_file(self, file_id: str) -> FileRecord | None:
        raw = await self._run(self._redis.hget(self._file(file_id), "meta"))
        return None if raw is None else FileRecord.decode(raw)

    async def file_content(self, file_id: str) -> bytes | None:
        found: bytes | None = await self._run(self._redis.hget(self._file(file_id), "content"))
        return found

    async def list_files(self, owner: str, limit: int) -> list[FileRecord]:
        ids = await self._run(self._redis.zrevrange(f"{self._p}:batch-files:of:{_owner(owner)}", 0, limit - 1))
        found = []
        for file_id in ids:
            record = await self.get_file(file_id.decode())
            if record is not None:
                found.append(record)
        return found

    async def delete_file(self, record: FileRecord) -> None:
        pipe = self._redis.pipeline(transaction=False)
        pipe.delete(self._file(record.id))
        pipe.zrem(f"{self._p}:batch-files:of:{_owner(record.owner)}", record.id)
        await self._run(pipe.execute())

    async def add(self, record: BatchRecord) -> BatchRecord:
        owned = f"{self._p}:batches:of:{_owner(record.owner)}"
        pipe = self._redis.pipeline(transaction=False)
        pipe.hset(self._batch(record.id), mapping={"data": record.encode(), "version": 1})
        pipe.sadd(f"{self._p}:batches:pending", record.id)
        pipe.zadd(owned, {record.id: time.time()})
        pipe.pexpire(owned, self._ttl_ms)
        await self._run(pipe.execute())
        record.version = 1
        return record

    async def get(self, batch_id: str) -> BatchRecord | None:
        data, version = await self._run(self._redis.hmget(self._batch(batch_id), ["data", "version"]))
        return None if data is None else BatchRecord.decode(data, int(version))

    async def write(self, record: BatchRecord, force: bool = False) -> BatchRecord | None:
        expiry = str(self._ttl_ms) if record.settled else "0"
        version = await self._run(self._write(keys=[self._batch(record.id)], args=[
            record.encode(), "" if force else str(record.version), expiry]))
        if not version:
            return None
        if record.settled:
            await self._run(self._redis.srem(f"{self._p}:batches:pending", record.id))
        record.version = int(version)
        return record

    async def list_batches(self, owner: str, after: str | None, limit: int) -> tuple[list[BatchRecord], bool]:
        owned = f"{self._p}:batches:of:{_owner(owner)}"
        start = 0
        if after is not None:
            rank = await self._run(self._redis.zrevrank(owned, after))
            start = rank + 1 if rank is not None else 0
        ids = await self._run(self._redis.zrevrange(owned, start, start + limit))
        page = []
        for batch_id in ids[:limit]:
            record = await self.get(batch_id.decode())
            if record is None:  # expired: forget it
                await self._run(self._redis.zrem(owned, batch_id))
            elif record.owner == owner:
                page.append(record)
        return page, len(ids) > limit

    async def pending(self) -> list[str]:
        return [m.decode() for m in await self._run(self._redis.smembers(f"{self._p}:batches:pending"))]

    async def claim(self, batch_id: str, lease_s: float) -> str | None:
        token = uuid.uuid4().hex
        taken = await self._run(self._redis.set(f"{self._p}:batch-claim:{batch_id}", token, nx=True,
                                                px=max(int(lease_s * 1000), 1)))
        return token if taken else None

    async def unclaim(self, batch_id: str, token: str) -> None:
        await self._run(self._unclaim(keys=[f"{self._p}:batch-claim:{batch_id}"], args=[token]))

    async def poll_turn(self, interval_s: float) -> bool:
        ms = max(int(interval_s * 1000) - 50, 1)  # (a little less: the next turn is never missed by a hair)
        return bool(await self._run(self._redis.set(f"{self._p}:batches:poll", "1", nx=True, px=ms)))
