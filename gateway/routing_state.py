"""What routing remembers between requests: cooldowns after repeated failures, and a running
estimate of each model's output length. In memory for one process; `RedisRoutingState` shares
both across processes and replicas.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.config import RoutingConfig
from gateway.redis_errors import redis_errors

__all__ = ["MemoryRoutingState", "RedisRoutingState", "RoutingState", "Snapshot"]

log = logging.getLogger("gateway.routing")
_ALPHA = 0.2  # weight of the newest observation in the running output estimate


@dataclass(frozen=True, slots=True)
class Snapshot:
    cooling: dict[str, float]  # model -> seconds of cooldown left
    outputs: dict[str, float]  # model -> expected output tokens


class RoutingState(Protocol):
    async def snapshot(self, models: list[str]) -> Snapshot: ...

    async def failed(self, model: str) -> bool:
        """Count a consecutive failure; True if the model now cools down."""
        ...

    async def cool(self, model: str, seconds: float) -> None: ...

    async def succeeded(self, model: str, output_tokens: int) -> None: ...


@dataclass
class MemoryRoutingState:
    config: RoutingConfig
    _failures: dict[str, int] = field(default_factory=dict)
    _cool_until: dict[str, float] = field(default_factory=dict)
    _outputs: dict[str, float] = field(default_factory=dict)

    async def snapshot(self, models: list[str]) -> Snapshot:
        now = time.monotonic()
        cooling = {m: until - now for m in models if (until := self._cool_until.get(m, 0.0)) > now}
        return Snapshot(cooling, {m: self._outputs[m] for m in models if m in self._outputs})

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

    async def succeeded(self, model: str, output_tokens: int) -> None:
        self.record_success(model, output_tokens)

    def record_success(self, model: str, output_tokens: int) -> None:
        self._failures.pop(model, None)
        old = self._outputs.get(model)
        self._outputs[model] = output_tokens if old is None else old + _ALPHA * (output_tokens - old)


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
# KEYS[1] = output estimate; ARGV = observed tokens, alpha, ttl ms
_OUTPUT_LUA = """
local old = redis.call('GET', KEYS[1])
local new = tonumber(ARGV[1])
if old then new = tonumber(old) + tonumber(ARGV[2]) * (new - tonumber(old)) end
redis.call('SET', KEYS[1], tostring(new), 'PX', ARGV[3])
return tostring(new)
"""


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

    def _key(self, kind: str, model: str) -> str:
        return f"{self._prefix}:{kind}:{model}"

    async def snapshot(self, models: list[str]) -> Snapshot:
        try:
            return await self._snapshot(models)
        except redis_errors() as exc:
            log.warning("routing state: Redis unavailable, using this process's memory: %r", exc)
            return await self._local.snapshot(models)

    async def failed(self, model: str) -> bool:
        try:
            return await self._failed(model)
        except redis_errors():
            return await self._local.failed(model)

    async def cool(self, model: str, seconds: float) -> None:
        try:
            await self._cool(model, seconds)
        except redis_errors():
            await self._local.cool(model, seconds)

    async def succeeded(self, model: str, output_tokens: int) -> None:
        try:
            await self._succeeded(model, output_tokens)
        except redis_errors():
            await self._local.succeeded(model, output_tokens)

    async def _snapshot(self, models: list[str]) -> Snapshot:
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

    async def _succeeded(self, model: str, output_tokens: int) -> None:
        await self._redis.delete(self._key("fails", model))
        await self._output(keys=[self._key("out", model)], args=[output_tokens, _ALPHA, 7 * 24 * 3600 * 1000])
