"""What routing remembers between requests: cooldowns after repeated failures, and what each
model's answers have taught about its output (`routing/outputs.py`: its verbosity, and its
reasoning tokens per effort). In memory for one process; `RedisRoutingState` shares both across
processes and replicas.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.config.schema import RoutingConfig
from gateway.routing.outputs import Observation, learn
from gateway.runtime.redis_errors import redis_errors

__all__ = ["Learned", "MemoryRoutingState", "RedisRoutingState", "RoutingState", "Snapshot"]

log = logging.getLogger("gateway.routing")
_CHANGED = 0.005  # a learned value that moves less than this (log space) leaves the version as it is


@dataclass(frozen=True, slots=True)
class Snapshot:
    cooling: dict[str, float]  # model -> seconds of cooldown left
    verbosity: dict[str, float]  # model -> learned log verbosity (read-only; may be the live dict)
    reasoning: dict[str, float]  # "model|effort" -> learned log(1 + reasoning tokens)
    shapes: dict[str, float]  # shape -> learned log factor on its prior base (all models)
    version: int = 0  # with the same dicts: changes whenever a learned value moves noticeably


@dataclass
class Learned:
    """Learned values and how many observations each has seen."""

    verbosity: dict[str, float] = field(default_factory=dict)
    reasoning: dict[str, float] = field(default_factory=dict)
    shapes: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)  # "v:model", "r:model|effort", "s:shape" -> observations
    _published: dict[str, float] = field(default_factory=dict)  # each value when the version last moved

    def observe(self, model: str, obs: Observation) -> bool:
        """Learn from one answer: the shape's base from what is not the model's own verbosity,
        then the model's verbosity from what is not the shape's; True if a value moved
        noticeably."""
        verbosity = self.verbosity.get(model, obs.prior_verbosity)
        moved = self._step(self.shapes, obs.shape, f"s:{obs.shape}", obs.log_ratio - verbosity, 0.0)
        moved |= self._step(self.verbosity, model, f"v:{model}", obs.log_ratio - self.shapes[obs.shape],
                            obs.prior_verbosity)
        if obs.effort is not None:
            moved |= self._step(self.reasoning, f"{model}|{obs.effort}", f"r:{model}|{obs.effort}",
                                obs.log_reasoning, obs.prior_reasoning)
        return moved

    def _step(self, values: dict[str, float], key: str, count_key: str, observed: float, prior: float) -> bool:
        """One step; True if the value is now noticeably off what it was when last published
        (many small steps add up)."""
        new, self.counts[count_key] = learn(values.get(key), self.counts.get(count_key, 0), observed, prior)
        values[key] = new
        published = self._published.get(count_key)
        if published is not None and abs(new - published) < _CHANGED:
            return False
        self._published[count_key] = new
        return True


class RoutingState(Protocol):
    def current(self, models: Sequence[str]) -> Snapshot | None:
        """The snapshot if it is at hand without I/O, else None (then await `snapshot`)."""
        ...

    async def snapshot(self, models: Sequence[str]) -> Snapshot: ...

    async def failed(self, model: str) -> bool:
        """Count a consecutive failure; True if the model now cools down."""
        ...

    async def cool(self, model: str, seconds: float) -> None: ...

    def record_success(self, model: str, obs: Observation) -> None:
        """A completed call: reset the model's failure streak, learn from its answer. No I/O on
        the request path: shared backends write it back in the background."""
        ...


@dataclass
class MemoryRoutingState:
    config: RoutingConfig
    _failures: dict[str, int] = field(default_factory=dict)
    _cool_until: dict[str, float] = field(default_factory=dict)
    _learned: Learned = field(default_factory=Learned)
    _version: int = 0  # bumped when a learned value moves noticeably
    _calm: Snapshot | None = None  # the snapshot while nothing cools down, for `_version`

    def current(self, models: Sequence[str]) -> Snapshot:
        if self._cool_until:
            now = time.monotonic()
            self._cool_until = {m: until for m, until in self._cool_until.items() if until > now}
            if self._cool_until:
                cooling = {m: until - now for m, until in self._cool_until.items() if m in models}
                learned = self._learned
                return Snapshot(cooling, learned.verbosity, learned.reasoning, learned.shapes, self._version)
        calm = self._calm
        if calm is None or calm.version != self._version:  # read-only use; no copies
            learned = self._learned
            calm = self._calm = Snapshot({}, learned.verbosity, learned.reasoning, learned.shapes, self._version)
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

    def record_success(self, model: str, obs: Observation) -> None:
        self._failures.pop(model, None)
        if self._learned.observe(model, obs):
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
# KEYS[1] = the model's learned hash (v, n; r:<effort>, rn:<effort>), KEYS[2] = its failure
# streak, KEYS[3] = the shapes' learned hash (s:<shape>, sn:<shape>); ARGV[1] = ttl ms, ARGV[2] =
# how many observations, then 6 values each: shape, log ratio, verbosity prior, effort ('' for
# none), log reasoning, reasoning prior. The same steps as `Learned.observe`.
_OUTPUT_LUA = """
redis.call('DEL', KEYS[2])
local function get(key, field, default)
  return tonumber(redis.call('HGET', key, field) or default)
end
local function step(key, field, countfield, x, prior)
  local v = get(key, field, prior)
  local n = get(key, countfield, '0')
  local w = math.max(1 / (n + 1), 0.1)
  local d = x - v
  if d > 1 then d = 1 elseif d < -1 then d = -1 end
  v = v + w * d
  redis.call('HSET', key, field, string.format('%.17g', v), countfield, tostring(n + 1))
  return v
end
for i = 0, tonumber(ARGV[2]) - 1 do
  local at = 3 + i * 6
  local x, prior = tonumber(ARGV[at + 1]), tonumber(ARGV[at + 2])
  local shape = step(KEYS[3], 's:' .. ARGV[at], 'sn:' .. ARGV[at], x - get(KEYS[1], 'v', prior), 0)
  step(KEYS[1], 'v', 'n', x - shape, prior)
  if ARGV[at + 3] ~= '' then
    step(KEYS[1], 'r:' .. ARGV[at + 3], 'rn:' .. ARGV[at + 3], tonumber(ARGV[at + 4]), tonumber(ARGV[at + 5]))
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[3], ARGV[1])
return 1
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
        self._successes: dict[str, list[Observation]] = {}  # not yet written back
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

    def record_success(self, model: str, obs: Observation) -> None:
        self._successes.setdefault(model, []).append(obs)
        if self._flush is None or self._flush.done():
            self._flush = asyncio.get_running_loop().create_task(self._write_successes())

    async def _write_successes(self) -> None:
        """Write the successes of the last refresh interval back in one pipeline: each model's
        failure streak ends, and it learns from each answer in turn."""
        await asyncio.sleep(self._config.shared_state_refresh_s)
        batch, self._successes = self._successes, {}
        try:
            pipe = self._redis.pipeline(transaction=False)
            for model, observations in batch.items():
                args: list[Any] = [_OUTPUT_TTL_MS, len(observations)]
                for o in observations:
                    args += [o.shape, repr(o.log_ratio), repr(o.prior_verbosity), o.effort or "",
                             repr(o.log_reasoning), repr(o.prior_reasoning)]
                keys = [self._key("learned", model), self._key("fails", model), self._key("learned", "*shapes*")]
                await self._output(keys=keys, args=args, client=pipe)
            await pipe.execute()
        except redis_errors() as exc:
            log.warning("routing state: could not write back successes: %r", exc)
            for model, observations in batch.items():
                for obs in observations:
                    self._local.record_success(model, obs)

    async def _snapshot(self, models: Sequence[str]) -> Snapshot:
        pipe = self._redis.pipeline(transaction=False)
        for m in models:
            pipe.pttl(self._key("cool", m))
        for m in models:
            pipe.hgetall(self._key("learned", m))
        pipe.hgetall(self._key("learned", "*shapes*"))
        results = await pipe.execute()
        ttls, learned, shape_fields = results[: len(models)], results[len(models):-1], results[-1]
        cooling = {m: ttl / 1000 for m, ttl in zip(models, ttls, strict=True) if ttl and ttl > 0}
        verbosity: dict[str, float] = {}
        reasoning: dict[str, float] = {}
        for m, fields in zip(models, learned, strict=True):
            for name, value in fields.items():
                name = name.decode() if isinstance(name, bytes) else name
                if name == "v":
                    verbosity[m] = float(value)
                elif name.startswith("r:"):
                    reasoning[f"{m}|{name[2:]}"] = float(value)
        shapes = {}
        for name, value in shape_fields.items():
            name = name.decode() if isinstance(name, bytes) else name
            if name.startswith("s:"):
                shapes[name[2:]] = float(value)
        return Snapshot(cooling, verbosity, reasoning, shapes)

    async def _failed(self, model: str) -> bool:
        cool_ms = int(self._config.cooldown_s * 1000)
        keys = [self._key("fails", model), self._key("cool", model)]
        return bool(await self._fail(keys=keys, args=[self._config.failure_threshold, cool_ms, cool_ms * 10]))

    async def _cool(self, model: str, seconds: float) -> None:
        await self._redis.set(self._key("cool", model), "1", px=max(int(seconds * 1000), 1))
