"""The prompt-prefix cache, per request: before the call, what each candidate model would read
from (or write to) its provider's prompt cache, priced into routing and used to add Anthropic
breakpoints; after it, how good the prediction was, what the cache saved or cost, and a record
of the prompt's blocks at the model that served it (written in the background).

Only prompts that could be cached at all (1,024 tokens or more) are looked at; shorter ones
cost nothing here. If the index's Redis is unavailable, prompts are treated as cold.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

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

__all__ = ["PrefixCache", "PrefixPlan", "add_breakpoint"]

log = logging.getLogger("gateway.cache")
_COLD = Warmth(0, False)


@dataclass
class PrefixPlan:
    blocks: dict[str, PromptBlocks]  # model -> its prompt's blocks (per encoding, shared)
    predictions: dict[str, Prediction]
    breakpoint_added: bool = False  # set when the attempt really sent the breakpoint

    def prediction(self, model: str) -> Prediction:
        return self.predictions.get(model, NOTHING)


@dataclass
class PrefixCache:
    config: PrefixLayer
    tokens: TokenCounter
    index: PrefixIndex
    metrics: Metrics
    background: Background = field(default_factory=Background)
    _hasher: BlockHasher | None = None

    def __post_init__(self) -> None:
        self._hasher = BlockHasher(self.tokens)

    async def plan(self, specs: Sequence[ModelSpec], body: dict[str, Any]) -> PrefixPlan | None:
        """Predictions for `specs` (those whose provider caches), or None for a short prompt."""
        relevant = [s for s in specs if min_tokens(s) is not None]
        if not self.config.enabled or not relevant or not likely_tokens_at_least(body, OPENAI_MIN_TOKENS):
            return None
        groups: dict[str, list[ModelSpec]] = {}
        for spec in relevant:
            groups.setdefault(encoding_name_for(spec.upstream_model), []).append(spec)
        marked = client_marked(body)
        plan = PrefixPlan({}, {})
        for encoding, members in groups.items():
            assert self._hasher is not None
            blocks = self._hasher.blocks(body, encoding)
            if blocks.tokens < OPENAI_MIN_TOKENS:
                continue
            warmth = await self._lookup([s.name for s in members], blocks)
            for spec in members:
                plan.blocks[spec.name] = blocks
                plan.predictions[spec.name] = predict(
                    spec, blocks, warmth.get(spec.name, _COLD), self.config.cache_control, marked)
        return plan if plan.blocks else None

    async def _lookup(self, models: list[str], blocks: PromptBlocks) -> dict[str, Warmth]:
        try:
            return await self.index.lookup(models, blocks.hashes, blocks.stable_hash)
        except CacheUnavailable as exc:
            self.metrics.child(self.metrics.cache_errors, "prefix").inc()
            log.warning("prefix index unavailable, treating the prompt as cold: %s", exc)
            return {}

    def settle(self, spec: ModelSpec, plan: PrefixPlan | None, usage: Usage) -> None:
        """After a completed call: savings and premium, prediction accuracy, and the record."""
        metrics = self.metrics
        if usage.cached_input or usage.cache_write_5m or usage.cache_write_1h:
            saved, premium = cache_effect(usage, spec.price)
            if saved:
                metrics.cache_saved.add(("prefix",), saved)
            if premium:
                metrics.cache_write_premium.add((), premium)
        blocks = plan.blocks.get(spec.name) if plan is not None else None
        if plan is None or blocks is None:
            return
        predicted, actual = plan.prediction(spec.name).cached, usage.cached_input
        metrics.child(metrics.cache_requests, "prefix", "hit" if actual else "miss").inc()
        both = min(predicted, actual)
        for outcome, tokens in (("correct", both), ("over", predicted - both), ("under", actual - both)):
            if tokens:
                metrics.child(metrics.prefix_prediction, outcome).inc(tokens)
        marker = blocks.stable_hash if plan.breakpoint_added else b""
        self.background.spawn(self._record(spec.name, blocks, marker))

    async def _record(self, model: str, blocks: PromptBlocks, marker: bytes) -> None:
        try:
            await self.index.record(model, blocks.hashes, marker, self.config.ttl_s)
        except CacheUnavailable as exc:
            self.metrics.child(self.metrics.cache_errors, "prefix").inc()
            log.warning("prefix index unavailable, prompt not recorded: %s", exc)


def add_breakpoint(plan: PrefixPlan | None, spec: ModelSpec, body: dict[str, Any]) -> None:
    """Put the Anthropic breakpoint the plan calls for into `body`, this attempt's own copy of
    the request (its message list is replaced, never changed in place)."""
    if plan is None:
        return
    plan.breakpoint_added = False
    if plan.prediction(spec.name).breakpoint:
        messages = with_breakpoint(body["messages"])
        if messages is not None:
            body["messages"] = messages
            plan.breakpoint_added = True
