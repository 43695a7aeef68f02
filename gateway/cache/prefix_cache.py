"""The prompt-prefix cache, per request: before the call, what each candidate model would read
from (or write to) its provider's prompt cache, priced into routing and used to add Anthropic
breakpoints; after it, how good the prediction was, what the cache saved or cost, and a record
of the prompt's blocks at the model that served it (written in the background).

Only prompts that could be cached at all (1,024 tokens or more) are looked at; shorter ones
cost nothing here. If the index's Redis is unavailable, prompts are treated as cold.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol

from gateway.cache.prefix_blocks import PromptBlocks, likely_tokens_at_least
from gateway.cache.prefix_hasher import BlockHasher
from gateway.cache.prefix_index import PrefixIndex, Warmth
from gateway.cache.prefix_rules import (
    NOTHING,
    OPENAI_MIN_TOKENS,
    Prediction,
    client_marked,
    min_tokens,
    predict,
    with_breakpoint,
)
from gateway.cache.response_store import CacheUnavailable
from gateway.config.schema import PrefixLayer
from gateway.config.settings import ModelSpec
from gateway.money.pricing import Usage, cache_effect
from gateway.observability.metrics import Metrics
from gateway.runtime.background import Background
from gateway.tokens.counter import TokenCounter, encoding_name_for
from gateway.tokens.pool import CountingPool

__all__ = ["NO_PREDICTIONS", "FixedTenant", "PrefixCache", "PrefixPlan", "Tenant"]

log = logging.getLogger("gateway.cache")
_COLD = Warmth(0, False)


class Tenant(Protocol):
    """Whose index entries a request may read and write (`gateway.pipeline.exchange.Caller` is
    one); asked only for prompts long enough to be looked up."""

    def tenant(self) -> str: ...


@dataclass(frozen=True, slots=True)
class FixedTenant:
    """A tenant known by name (`gateway route`, tests)."""

    name: str

    def tenant(self) -> str:
        return self.name


@dataclass(frozen=True, slots=True)
class PrefixPlan:
    """What each candidate model would read from (or write to) its provider's prompt cache for
    one request. Empty (`NO_PREDICTIONS`) for a prompt too short to cache."""

    blocks: Mapping[str, PromptBlocks]  # model -> its prompt's blocks (per encoding, shared)
    predictions: Mapping[str, Prediction]
    scope: str = ""  # the tenant whose index entries were read, and will be written

    def prediction(self, model: str) -> Prediction:
        return self.predictions.get(model, NOTHING)

    def with_breakpoint(self, model: str, messages: list[Any]) -> list[Any] | None:
        """The messages with the Anthropic breakpoint this plan calls for at `model` (a new list,
        the given one is never changed), or None when there is none to add."""
        if not self.predictions or not self.prediction(model).breakpoint:
            return None
        return with_breakpoint(messages)


NO_PREDICTIONS = PrefixPlan(MappingProxyType({}), MappingProxyType({}))


# Prompts this long (in characters, so at least about as many tokens) are hashed on a worker
# thread: tokenising them would hold the event loop for milliseconds.
_OFFLOAD_CHARS = 16 * 1024


@dataclass
class PrefixCache:
    config: PrefixLayer
    tokens: TokenCounter
    counting: CountingPool
    index: PrefixIndex
    metrics: Metrics
    background: Background = field(default_factory=Background)
    _hasher: BlockHasher | None = None

    def __post_init__(self) -> None:
        self._hasher = BlockHasher(self.tokens)

    async def plan(self, specs: Sequence[ModelSpec], body: dict[str, Any], caller: Tenant) -> PrefixPlan:
        """Predictions for `specs` (those whose provider caches) for the request `body`, from
        what the caller's tenant sent before: no tenant can learn what another one sent."""
        relevant = [s for s in specs if min_tokens(s) is not None]
        if not self.config.enabled or not relevant or not likely_tokens_at_least(body, OPENAI_MIN_TOKENS):
            return NO_PREDICTIONS
        scope = caller.tenant()
        groups: dict[str, list[ModelSpec]] = {}
        for spec in relevant:
            groups.setdefault(encoding_name_for(spec.upstream_model), []).append(spec)
        marked = client_marked(body)
        blocks_of: dict[str, PromptBlocks] = {}
        predictions: dict[str, Prediction] = {}
        large = likely_tokens_at_least(body, _OFFLOAD_CHARS)
        for encoding, members in groups.items():
            assert self._hasher is not None
            if large:
                blocks = await self.counting.offload(self._hasher.blocks, body, encoding)
            else:
                blocks = self._hasher.blocks(body, encoding)
            if blocks.tokens < OPENAI_MIN_TOKENS:
                continue
            warmth = await self._lookup([_scoped(scope, s.name) for s in members], blocks)
            for spec in members:
                blocks_of[spec.name] = blocks
                predictions[spec.name] = predict(
                    spec, blocks, warmth.get(_scoped(scope, spec.name), _COLD), self.config.cache_control, marked)
        return PrefixPlan(blocks_of, predictions, scope) if blocks_of else NO_PREDICTIONS

    async def _lookup(self, names: list[str], blocks: PromptBlocks) -> dict[str, Warmth]:
        try:
            return await self.index.lookup(names, blocks.hashes, blocks.stable_hash)
        except CacheUnavailable as exc:
            self.metrics.child(self.metrics.cache_errors, "prefix").inc()
            log.warning("prefix index unavailable, treating the prompt as cold: %s", exc)
            return {}

    def settle(self, spec: ModelSpec, plan: PrefixPlan, breakpoint_added: bool, usage: Usage) -> None:
        """After a call: savings and premium, prediction accuracy, and the record of the prompt's
        blocks at `spec` (`breakpoint_added`: the attempt sent the plan's breakpoint)."""
        metrics = self.metrics
        if usage.cached_input or usage.cache_write_5m or usage.cache_write_1h:
            saved, premium = cache_effect(usage, spec.price)
            if saved:
                metrics.cache_saved.add(("prefix",), saved)
            if premium:
                metrics.cache_write_premium.add((), premium)
        blocks = plan.blocks.get(spec.name)
        if blocks is None:
            return
        predicted, actual = plan.prediction(spec.name).cached, usage.cached_input
        metrics.child(metrics.cache_requests, "prefix", "hit" if actual else "miss").inc()
        both = min(predicted, actual)
        for outcome, tokens in (("correct", both), ("over", predicted - both), ("under", actual - both)):
            if tokens:
                metrics.child(metrics.prefix_prediction, outcome).inc(tokens)
        marker = blocks.stable_hash if breakpoint_added else b""
        self.background.spawn(self._record(_scoped(plan.scope, spec.name), blocks, marker))

    async def close(self) -> None:
        """At shutdown, after the background records: the index's own Redis client, if any."""
        await self.index.close()

    async def _record(self, name: str, blocks: PromptBlocks, marker: bytes) -> None:
        try:
            await self.index.record(name, blocks.hashes, marker, self.config.ttl_s)
        except CacheUnavailable as exc:
            self.metrics.child(self.metrics.cache_errors, "prefix").inc()
            log.warning("prefix index unavailable, prompt not recorded: %s", exc)


def _scoped(scope: str, model: str) -> str:
    """The index's name for `model` as the tenant `scope` sees it: one set of entries each."""
    return f"{scope}/{model}"
