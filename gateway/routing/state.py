"""What routing remembers between requests: cooldowns after repeated failures, and a running
estimate of each model's output length. In memory for one process; `RedisRoutingState` shares
both across processes and replicas.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.config.schema import RoutingConfig
from gateway.runtime.redis_errors import redis_errors

__all__ = ["MemoryRoutingState", "RedisRoutingState", "RoutingState", "Snapshot"]

log = logging.getLogger("gateway.routing")
_ALPHA = 0.2  # weight of the newest observation in the running output estimate


@dataclass(frozen=True, slots=True)
class Snapshot:
    cooling: dict[str, float]  # model -> seconds of cooldown left
    outputs: dict[str, float]  # model -> expected output tokens (read-only; may be the live dict)
    version: int = 0  # with the same `outputs` object: changes whenever a rounded expectation does


class RoutingState(Protocol):
    def current(self, models: Sequence[str]) -> Snapshot | None:
        """The snapshot if it is at hand without I/O, else None (then await `snapshot`)."""
        ...

    async def snapshot(self, models: Sequence[str]) -> Snapshot: ...

    async def failed(self, model: str) -> bool:
        """Count a consecutive failure; True if the model now cools down."""
        ...

    async def cool(self, model: str, seconds: float) -> None: ...

    def record_success(self, model: str, output_tokens: int) -> None:
        """A completed call: reset the model's failure streak, learn its output length. No I/O on
        the request path: shared backends write it back in the background."""
        ...


@dataclass
class MemoryRoutingState:
    config: RoutingConfig
    _failures: dict[str, int] = field(default_factory=dict)
    _cool_until: dict[str, float] = field(default_factory=dict)
    _outputs: dict[str, float] = field(default_factory=dict)
    _version: int = 0  # bumped when a model's rounded expected output changes
    _calm: Snapshot | None = None  # the snapshot while nothing cools down, for `_version`

    def current(self, models: Sequence[str]) -> Snapshot:
        if self._cool_until:
            now = time.monotonic()
            self._cool_until = {m: until for m, until in self._cool_until.items() if until > now}
            if self._cool_until:
                cooling = {m: until - now for m, until in self._cool_until.items() if m in models}
                return Snapshot(cooling, self._outputs, self._version)
        calm = self._calm
        if calm is None or calm.version != self._version:
            calm = self._calm = Snapshot({}, self._outputs, self._version)  # read-only use; no copies
        return calm

    async def snapshot(self, models: Sequence[str]) -> Snapshot:
        return self.current(models)

    async def failed(self, model: str) -> bool:
        count = self._failures.get(model, 0) + 1
        if count >= self.config.failure_threshold:
            self._failures[model] = 0
            await self.cool(model, self.config.cooldown_s)
            return True
        self._failures[model] = count
        return False

    async def cool(self, model: str, seconds: float) -> None:
        self._cool_until[model] = max(self._cool_until.get(model, 0.0), time.monotonic() + seconds)

    def record_success(self, model: str, output_tokens: int) -> None:
        self._failures.pop(model, None)
        old = self._outputs.get(model)
        new = self._outputs[model] = output_tokens if old is None else old + _ALPHA * (output_tokens - old)
        if old is None or round(new) != round(old):
            self._version += 1


# KEYS[1] = failures counter, KEYS[2] = cooldown flag; ARGV = threshold, cooldown ms, counter ttl ms
_FAIL_LUA = """
local n = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
if n >= tonumber(ARGV[1]) then
  redis.call('DEL', KEYS[1])
  redis.call('SET', KEYS[2], '1', 'PX', ARGV[2])
  return 1
end
return 0
"""
# KEYS[1] = output estimate, KEYS[2] = failure streak; ARGV = mean of k observations,
# weight of those k observations (1 - (1 - alpha)^k), ttl ms
_OUTPUT_LUA = """
redis.call('DEL', KEYS[2])
local old = redis.call('GET', KEYS[1])
local new = tonumber(ARGV[1])
if old then new = tonumber(old) + tonumber(ARGV[2]) * (new - tonumber(old)) end
redis.call('SET', KEYS[1], tostring(new), 'PX', ARGV[3])
return tostring(new)
"""
_OUTPUT_TTL_MS = 7 * 24 * 3600 * 1000


class RedisRoutingState:
    """Shared state in Redis. Keys carry a `{gw-routing}` hash tag so one Lua script's keys stay
    on one Cluster slot, and every key expires. If Redis fails, this process carries on with
    its own memory state (logged) until Redis answers again."""

    def __init__(self, redis: Any, config: RoutingConfig, prefix: str = "gw") -> None:
        self._redis = redis
        self._config = config
        self._local = MemoryRoutingState(config)
        self._prefix = f"{prefix}:{{gw-routing}}"
        self._fail = redis.register_script(_FAIL_LUA)
        self._output = redis.register_script(_OUTPUT_LUA)
        # Per model list: (fetched at, snapshot). Refetched when older than the refresh interval
        # or when this process has just cooled a model.
        self._cache: dict[Sequence[str], tuple[float, Snapshot]] = {}
        self._successes: dict[str, list[int]] = {}  # model -> [sum, count] not yet written back
        self._flush: asyncio.Task[None] | None = None

    def _key(self, kind: str, model: str) -> str:
        return f"{self._prefix}:{kind}:{model}"

    def current(self, models: Sequence[str]) -> Snapshot | None:
        cached = self._cache.get(models)
        if cached is not None and time.monotonic() - cached[0] < self._config.shared_state_refresh_s:
            return cached[1]
        return None

    async def snapshot(self, models: Sequence[str]) -> Snapshot:
        cached = self.current(models)
        if cached is not None:
            return cached
        try:
            snapshot = await self._snapshot(models)
        except redis_errors() as exc:
            log.warning("routing state: Redis unavailable, using this process's memory: %r", exc)
            return self._local.current(models)
        self._cache[models] = (time.monotonic(), snapshot)
        return snapshot

    async def failed(self, model: str) -> bool:
        try:
            cooled = await self._failed(model)
        except redis_errors():
            cooled = await self._local.failed(model)
        if cooled:
            self._cache.clear()
        return cooled

    async def cool(self, model: str, seconds: float) -> None:
        try:
            await self._cool(model, seconds)
        except redis_errors():
            await self._local.cool(model, seconds)
        self._cache.clear()

    def record_success(self, model: str, output_tokens: int) -> None:
        pending = self._successes.setdefault(model, [0, 0])
        pending[0] += output_tokens
        pending[1] += 1
        if self._flush is None or self._flush.done():
            self._flush = asyncio.get_running_loop().create_task(self._write_successes())

    async def _write_successes(self) -> None:
        """Write the successes of the last refresh interval back in one pipeline: each model's
        failure streak ends, and its output estimate takes the batch's mean at the weight the
        batch's observations would have had one by one."""
        await asyncio.sleep(self._config.shared_state_refresh_s)
        batch, self._successes = self._successes, {}
        try:
            pipe = self._redis.pipeline(transaction=False)
            for model, (total, count) in batch.items():
                weight = 1 - (1 - _ALPHA) ** count
                keys = [self._key("out", model), self._key("fails", model)]
                await self._output(keys=keys, args=[total / count, weight, _OUTPUT_TTL_MS], client=pipe)
            await pipe.execute()
        except redis_errors() as exc:
            log.warning("routing state: could not write back successes: %r", exc)
            for model, (total, count) in batch.items():
                self._local.record_success(model, round(total / count))

    async def _snapshot(self, models: Sequence[str]) -> Snapshot:
        pipe = self._redis.pipeline(transaction=False)
        for m in models:
            pipe.pttl(self._key("cool", m))
        for m in models:
            pipe.get(self._key("out", m))
        results = await pipe.execute()
        ttls, outs = results[: len(models)], results[len(models) :]
        cooling = {m: ttl / 1000 for m, ttl in zip(models, ttls, strict=True) if ttl and ttl > 0}
        outputs = {m: float(v) for m, v in zip(models, outs, strict=True) if v is not None}
        return Snapshot(cooling, outputs)

    async def _failed(self, model: str) -> bool:
        cool_ms = int(self._config.cooldown_s * 1000)
        keys = [self._key("fails", model), self._key("cool", model)]
        return bool(await self._fail(keys=keys, args=[self._config.failure_threshold, cool_ms, cool_ms * 10]))

    async def _cool(self, model: str, seconds: float) -> None:
        await self._redis.set(self._key("cool", model), "1", px=max(int(seconds * 1000), 1))
