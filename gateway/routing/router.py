"""Where routing decides: which models qualify for a tier, what each would cost for this request
(priced by the pricing core), and in which order the tier's policy wants them tried.

Filtering comes before any policy, and every exclusion keeps its reason: quality below the tier,
unavailable (no key), cooling down, a capability the request needs, or a context window the
request does not fit.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, Protocol, cast

from gateway.cache.prefix_cache import NO_PREDICTIONS, PrefixCache, Tenant
from gateway.cache.prefix_index import MemoryPrefixIndex
from gateway.cache.prefix_rules import OPENAI_MIN_TOKENS, Prediction
from gateway.config.settings import ModelSpec, Settings, TierSpec
from gateway.errors import InvalidRequest, PermissionDenied, ServiceUnavailable
from gateway.money.pricing import Price, Usage, estimate_cost
from gateway.observability.metrics import Metrics
from gateway.routing.categories import OVERALL, detect_category
from gateway.routing.outputs import (
    REASONING_PRIOR,
    SHAPE_BASE,
    Observation,
    default_effort,
    effort_of,
    expected_tokens,
    prior_verbosity,
)
from gateway.routing.plan import (
    Demand,
    Excluded,
    Order,
    Outputs,
    RoutePlan,
    TierModels,
    encodings_in_reach,
    reason_head,
)
from gateway.routing.state import MemoryRoutingState, RoutingState, Snapshot
from gateway.tokens.counter import TokenCounter
from gateway.tokens.pool import CountingPool
from routing_policies import PROMPT_CHARS, Candidate, Prompt, PromptPolicy

# (Excluded and RoutePlan are plan's, re-exported)
__all__ = ["Excluded", "RoutePlan", "RoutedRequest", "Router", "service_price", "unfit_reason"]

log = logging.getLogger("gateway.routing")


class RoutedRequest(Protocol):
    """What routing reads of a request (`gateway.pipeline.request.ChatRequest` is one)."""

    @property
    def body(self) -> dict[str, Any]: ...

    @property
    def messages(self) -> list[Any]: ...

    @property
    def tools(self) -> list[Any] | None: ...

    @property
    def max_output(self) -> int | None: ...

    @property
    def needs(self) -> frozenset[str]: ...

    @property
    def n(self) -> int: ...

    @property
    def shape(self) -> str: ...


def _clamp(prediction: Prediction, input_tokens: int) -> tuple[int, int]:
    """(cached, write) tokens of a prediction, within the counted prompt."""
    cached = min(prediction.cached, input_tokens)
    return cached, min(prediction.write, input_tokens - cached)


def unfit_reason(spec: ModelSpec, input_tokens: int, max_tokens: int | None) -> str | None:
    """Why `spec` cannot take a prompt of `input_tokens` with `max_tokens` to write; None if it can."""
    if spec.max_input_tokens and input_tokens + (max_tokens or 0) > spec.max_input_tokens:
        return (f"context window: {input_tokens} input + {max_tokens or 0} max output tokens > "
                f"{spec.max_input_tokens}")
    if max_tokens and spec.max_output_tokens and max_tokens > spec.max_output_tokens:
        return f"max_tokens {max_tokens} > model's maximum output {spec.max_output_tokens}"
    return None


class Router:
    def __init__(self, settings: Settings, state: RoutingState, prefix: PrefixCache, tokens: TokenCounter) -> None:
        self._settings = settings
        self.state = state
        self._prefix = prefix
        self._tokens = tokens
        self._priors = {name: prior_verbosity(spec.upstream_model) for name, spec in settings.models.items()}
        self._efforts = {name: default_effort(spec.upstream_model, spec.wire) for name, spec in settings.models.items()}
        self._latency: dict[str, float] = {}  # model -> running mean duration, this process
        self._answered: dict[str, float] = {}  # model -> when it last answered (monotonic), this process
        self._routed: dict[str, int] = {}  # tier -> requests routed, this process (for exploration)
        self._explore_every = settings.routing.explore.every
        # Quality, keys and prices never change at run time: split each tier's models once.
        # (embedding models answer /v1/embeddings only: never a tier's candidate or baseline)
        models = self._models = sorted((m for m in settings.models.values() if m.mode == "chat"), key=lambda m: m.name)
        self._tiers = {tier.name: TierModels.build(tier, models) for tier in settings.tiers.values()}
        self._baselines = {t.name: self._baseline(t, self._tiers[t.name].in_tier) for t in settings.tiers.values()}
        # Quality by category: a tier's split per request category, made when first needed.
        self._categorized = any(m.quality_by_category for m in models)
        self._splits: dict[tuple[str, str], TierModels] = {}
        self._encodings = {t.name: encodings_in_reach(t, models) for t in settings.tiers.values()}
        # Per (tier, demand): the expected outputs of all its rows, for (snapshot.verbosity, version).
        self._expected: dict[tuple[str, Demand], tuple[dict[str, float], int, Outputs]] = {}
        # The latest cost order found, by (tier, limit, demand): Order.
        self._orders: dict[tuple[str, int | None, Demand], Order] = {}

    @classmethod
    def offline(cls, settings: Settings, tokens: TokenCounter) -> Router:
        """A router that has learned nothing and knows no warm prompt (`gateway route`, tests)."""
        index = MemoryPrefixIndex(settings.prefix.max_entries)
        prefix = PrefixCache(settings.prefix, tokens, CountingPool(tokens, settings.limits), index, Metrics())
        return cls(settings, MemoryRoutingState(settings.routing), prefix, tokens)

    def _split(self, tier: TierSpec, category: str) -> TierModels:
        """The tier's models for requests of `category` (overall: the one made at start-up)."""
        if category == OVERALL:
            return self._tiers[tier.name]
        split = self._splits.get((tier.name, category))
        if split is None:
            split = self._splits[tier.name, category] = TierModels.build(tier, self._models, category)
        return split

    def observe(self, spec: ModelSpec, request: RoutedRequest, usage: Usage) -> None:
        """A completed call: reset the model's failure streak, learn from its answer (its
        visible output against the request's base, its reasoning under the request's effort)."""
        self._answered[spec.name] = time.monotonic()
        shape, choices = request.shape, request.n
        visible = (usage.completion_tokens - usage.reasoning) / choices
        effort = (effort_of(request.body) or self._efforts[spec.name]) if spec.reasoning else None
        obs = Observation(shape, math.log(max(visible, 1) / self._prior_base(shape)), self._priors[spec.name],
                          effort, math.log1p(usage.reasoning / choices),
                          math.log1p(REASONING_PRIOR[effort]) if effort is not None else 0.0)
        self.state.record_success(spec.name, obs)

    def _prior_base(self, shape: str) -> int:
        return SHAPE_BASE.get(shape) or self._settings.routing.default_output_tokens

    def _demand(self, request: RoutedRequest) -> Demand:
        return Demand(request.shape, effort_of(request.body), request.max_output, request.n)

    def observe_latency(self, model: str, seconds: float) -> None:
        old = self._latency.get(model)
        self._latency[model] = seconds if old is None else old + 0.2 * (seconds - old)

    def tier(self, name: str) -> TierSpec | None:
        return self._settings.tiers.get(name)

    def encodings(self, tier: TierSpec) -> tuple[str, ...]:
        """The encodings a request to `tier` must be counted in (for `plan`'s `counts`)."""
        return self._encodings[tier.name]

    async def plan(
        self, tier: TierSpec, request: RoutedRequest, counts: Mapping[str, int], caller: Tenant,
        limit: int | None = None, allowed: Sequence[str] | None = None, routed: bool = True,
        service_tier: str = "default",
    ) -> RoutePlan:
        """Rank the tier's candidates for this request; raises if none qualifies. `counts`: the
        prompt's tokens in each of the tier's `encodings`; `caller`: whose prompt-cache state the
        predictions may read. With `limit` (what a request may try), a policy that ranks by cost
        gets only that many built. `allowed`: the only models the caller's key may use (None:
        any). `routed`: False when the plan is only shown (an estimate), so that a policy that
        learns from its own decisions does not learn from it. `service_tier`: each model is priced
        at it (`service_price`): `flex` for a request that may wait, `batch` for a batch line."""
        models = self._tiers[tier.name]
        if self._categorized:
            models = self._split(tier, detect_category(request.messages))
        if not models.rows:  # no model of the catalog reaches the tier's quality
            raise _no_candidate(tier, list(models.excluded))
        snapshot = self.state.current(models.names) or await self.state.snapshot(models.names)
        max_tokens = request.max_output
        enc = models.flat_encoding
        if enc is not None and allowed is None and not (snapshot.cooling or request.needs or service_tier != "default"):
            n = counts[enc]  # the common case
            if (n + (max_tokens or 0) <= models.min_context and (not max_tokens or max_tokens <= models.min_output)
                    and n < OPENAI_MIN_TOKENS):
                plan = self._flat_plan(tier, models, snapshot, n, self._demand(request), limit)
                return self._explore(plan) if routed and self._due(tier) else plan
        longest = max(counts.values())
        excluded = list(models.excluded)
        rows, prices = self._live(models, snapshot, request.needs, counts, longest, max_tokens, excluded, allowed)
        if not rows:
            raise _no_candidate(tier, excluded)
        inputs = [counts[enc] for _, enc in rows] if len(counts) > 1 else [*counts.values()] * len(rows)
        demand = self._demand(request)
        outs = self._expected_outputs(models, snapshot, demand) if rows is models.rows else \
            self._outputs_of(rows, snapshot, demand)
        prefix = NO_PREDICTIONS
        if longest >= OPENAI_MIN_TOKENS:
            prefix = await self._prefix.plan([spec for spec, _ in rows], request.body, caller)
        cached = [(0, 0)] * len(rows) if not prefix.predictions else [
            _clamp(prefix.prediction(spec.name), n) for (spec, _), n in zip(rows, inputs, strict=True)]
        prices = prices if service_tier == "default" else [service_price(spec, service_tier) for spec, _ in rows]
        costs = [estimate_cost(price, n, out, *c, reasoning=r) for price, n, out, r, c
                 in zip(prices, inputs, outs.visible, outs.reasoning, cached, strict=True)]
        order = sorted(range(len(rows)), key=costs.__getitem__)[:limit] if models.by_cost else range(len(rows))
        latency = self._latency
        candidates = [Candidate(rows[i][0].name, rows[i][0].quality or 0.0, costs[i], inputs[i], outs.visible[i],
                                latency.get(rows[i][0].name), *cached[i], outs.reasoning[i]) for i in order]
        if models.by_cost:
            ranked = candidates
        elif tier.reads_prompt:
            text = _last_user_text(request.messages)
            category = models.category if self._categorized else detect_category(request.messages)
            prompt = Prompt(text, self._tokens.token_ids(text, "o200k_base"), longest, category, routed)
            ranked = cast(PromptPolicy, tier.policy).rank(candidates, tier.route, prompt)
        else:
            ranked = tier.policy.rank(candidates, tier.route)
        head = "" if models.category == OVERALL else reason_head(tier, len(rows), len(excluded), models.category)
        plan = RoutePlan(tier, ranked[0], excluded, self._baselines[tier.name], len(rows), len(ranked), prefix,
                         head, ranked, None)
        return self._explore(plan) if models.by_cost and routed and self._due(tier) else plan

    def _due(self, tier: TierSpec) -> bool:
        """Whether this request of a cost-ranked tier is one that may explore."""
        every = self._explore_every
        if not every:
            return False
        count = self._routed[tier.name] = self._routed.get(tier.name, 0) + 1
        return count % every == 0

    def _explore(self, plan: RoutePlan) -> RoutePlan:
        """The plan, or with a runner-up first: one that has not answered here for a while and is
        estimated at most `max_extra_cost` dearer than the best (its estimate may be out of date)."""
        explore = self._settings.routing.explore
        best = plan.first
        bound = best.estimated_cost_pico * (1 + explore.max_extra_cost)
        now = time.monotonic()
        for candidate in plan.ranked[1:]:
            idle = now - self._answered.get(candidate.model, -math.inf)
            if candidate.estimated_cost_pico <= bound and idle >= explore.after_s:
                said = "never answered here" if idle == math.inf else f"not measured for {idle:.0f} s"
                return plan.exploring(replace(candidate, note=f"exploring: {said}"))
        return plan

    def _flat_plan(
        self, tier: TierSpec, models: TierModels, snapshot: Snapshot, n: int, demand: Demand, limit: int | None,
    ) -> RoutePlan:
        """The common case: a policy ranking by cost, nothing excluded per request (no key
        restriction, nothing cooling, no capability needed, the prompt fits every window), one
        prompt length for all, no prompt-cache predictions. The cost order found for an earlier
        request of the same demand holds while the prompt length stays in its range and the
        expected outputs are the same; only the first is priced and built now, the others when
        read."""
        found = self._orders.get((models.key, limit, demand))
        if found is not None and found.lo <= n <= found.hi and (
                found.learned is snapshot.verbosity and found.version == snapshot.version):
            outs, top = found.outs, found.top  # the order found for an earlier request holds
        else:
            outs, top = self._cost_order(models, snapshot, n, demand, limit)
        i, latency = top[0], self._latency
        return RoutePlan(tier, models.candidate(i, n, outs, latency), models.excluded, self._baselines[tier.name],
                         len(models.rows), len(top), NO_PREDICTIONS, models.head, None, (models, top, n, outs, latency))

    def _outputs_of(self, rows: Sequence[tuple[ModelSpec, str]], snapshot: Snapshot, demand: Demand) -> Outputs:
        visible, reasoning = [], []
        for spec, _ in rows:
            out, thought = self._expect(spec, snapshot, demand)
            visible.append(out)
            reasoning.append(thought)
        return Outputs(visible, reasoning, [v + r for v, r in zip(visible, reasoning, strict=True)])

    def _expect(self, spec: ModelSpec, snapshot: Snapshot, demand: Demand) -> tuple[int, int]:
        """(visible output, reasoning) tokens `spec` is expected to write for `demand`."""
        prior = self._priors[spec.name]
        reasoning = None
        if spec.reasoning:
            effort = demand.effort or self._efforts[spec.name]
            reasoning = snapshot.reasoning.get(f"{spec.name}|{effort}")
            if reasoning is None:
                reasoning = math.log1p(REASONING_PRIOR[effort])
        base = self._prior_base(demand.shape) * math.exp(snapshot.shapes.get(demand.shape, 0.0))
        return expected_tokens(base, snapshot.verbosity.get(spec.name, prior), prior, reasoning, demand.max_tokens,
                               demand.n)

    def _expected_outputs(self, models: TierModels, snapshot: Snapshot, demand: Demand) -> Outputs:
        """Expected outputs of all the split's rows for `demand`; recomputed only when the
        snapshot's learned values changed (read-only: shared by the requests until then)."""
        memo = self._expected.get((models.key, demand))
        if memo is not None and memo[0] is snapshot.verbosity and memo[1] == snapshot.version:
            return memo[2]
        outs = self._outputs_of(models.rows, snapshot, demand)
        if len(self._expected) >= 256:
            self._expected.clear()
        self._expected[models.key, demand] = (snapshot.verbosity, snapshot.version, outs)
        return outs

    def _cost_order(
        self, models: TierModels, snapshot: Snapshot, n: int, demand: Demand, limit: int | None
    ) -> tuple[Outputs, list[int]]:
        """The expected outputs of the tier's rows for `demand` and the first `limit` rows by
        estimated cost for `n` input tokens; kept for the next requests with the range of prompt
        lengths over which the same order holds."""
        assert models.flat is not None
        outs = self._expected_outputs(models, snapshot, demand)
        key = (models.key, limit, demand)
        found = self._orders.get(key)
        if found is not None and found.lo <= n <= found.hi and found.outs == outs:  # a new snapshot, same figures
            top, lo, hi = found.top, found.lo, found.hi
        else:
            top, lo, hi = models.flat.cheapest(n, outs.total, limit)
        if len(self._orders) >= 256:
            self._orders.clear()
        self._orders[key] = Order(snapshot.verbosity, snapshot.version, lo, hi, outs, top)
        return outs, top

    def _live(
        self, models: TierModels, snapshot: Snapshot, needs: frozenset[str], counts: Mapping[str, int], longest: int,
        max_tokens: int | None, excluded: list[Excluded], allowed: Sequence[str] | None,
    ) -> tuple[Sequence[tuple[ModelSpec, str]], Sequence[Price]]:
        """The rows that can serve this request (and their prices); the others go to `excluded`."""
        fits = longest + (max_tokens or 0) <= models.min_context and (
            not max_tokens or max_tokens <= models.min_output)
        if allowed is None and fits and not (snapshot.cooling or needs):
            return models.rows, models.prices  # the common case: nothing to check per model
        rows = []
        for spec, enc in models.rows:
            reason = self._exclusion(spec, snapshot, needs, counts[enc], max_tokens)
            if reason is None and allowed is not None and spec.name not in allowed:
                reason = "not allowed for this key", "permission"
            if reason is None:
                rows.append((spec, enc))
            else:
                excluded.append(Excluded(spec.name, *reason))
        return rows, [spec.price for spec, _ in rows]

    async def estimate(self, spec: ModelSpec, request: RoutedRequest, tokens: int, caller: Tenant,
                       service_tier: str = "default") -> dict[str, Any]:
        """POST /v1/estimate for a model asked for by name: its cost for a prompt of `tokens`, no
        routing; prompt-cache predictions from the caller's own tenant only; at the price of the
        `service_tier` it would be sent at (`service_price`)."""
        names = (spec.name,)
        snapshot = self.state.current(names) or await self.state.snapshot(names)
        output, reasoning = self._expect(spec, snapshot, self._demand(request))
        prefix = await self._prefix.plan([spec], request.body, caller) if tokens >= OPENAI_MIN_TOKENS \
            else NO_PREDICTIONS
        cached, write = _clamp(prefix.prediction(spec.name), tokens)
        price = service_price(spec, service_tier)
        cost = estimate_cost(price, tokens, output, cached, write, reasoning) / 10**12
        candidate = {"model": spec.name, "estimated_cost_usd": cost, "input_tokens": tokens, "cached_tokens": cached,
                     "cache_write_tokens": write, "expected_output_tokens": output,
                     "expected_reasoning_tokens": reasoning, "quality": spec.quality}
        return {"model": spec.name, "tier": None, "policy": None, "estimated_cost_usd": cost,
                "candidates": [candidate], "excluded": [], "baseline_model": None}

    def _exclusion(
        self, spec: ModelSpec, snapshot: Snapshot, needs: frozenset[str], input_tokens: int, max_tokens: int | None
    ) -> tuple[str, str] | None:
        if spec.name in snapshot.cooling:
            return f"cooling down ({snapshot.cooling[spec.name]:.0f}s left)", "cooling"
        missing = needs - spec.capabilities if needs else None
        if missing:
            return f"lacks capability {', '.join(sorted(missing))}", "capability"
        unfit = unfit_reason(spec, input_tokens, max_tokens)
        return (unfit, "context") if unfit is not None else None

    def _baseline(self, tier: TierSpec, in_tier: list[ModelSpec]) -> ModelSpec | None:
        if tier.baseline_model:
            return self._settings.models[tier.baseline_model]
        return max(in_tier, key=lambda m: (m.quality or 0.0, m.price.base.output), default=None)


def service_price(spec: ModelSpec, service_tier: str) -> Price:
    """What `spec` costs at `service_tier`: for `flex` (a request that may wait), the flex price
    only where the gateway can send it at flex (`spec.deferred`); else the tier's price, or the
    default one where the model has none."""
    if service_tier == "flex":
        return spec.price.for_service("flex") if spec.deferred is not None else spec.price
    return spec.price.for_service(service_tier)


def _last_user_text(messages: list[Any]) -> str:
    """The start of the last user message's text: what a prompt-reading policy reads (its token
    ids are memoised, so a resent message is encoded once)."""
    last = next((m for m in reversed(messages) if m.get("role") == "user"), messages[-1])
    content = last.get("content")
    text = content if content.__class__ is str else " ".join(
        p.get("text") or "" for p in content or () if p.get("type") == "text")
    return text[:PROMPT_CHARS]


def _no_candidate(tier: TierSpec, excluded: list[Excluded]) -> Exception:
    kinds = {e.kind for e in excluded if e.kind != "quality"}
    why = "; ".join(f"{e.model}: {e.reason}" for e in excluded if e.kind != "quality") or "no model has the quality"
    if not kinds:
        return ServiceUnavailable(f"no model in tier '{tier.name}' (min_quality {tier.min_quality:g})", param="model")
    if kinds == {"permission"}:
        return PermissionDenied(f"no model of tier '{tier.name}' is allowed for this key", param="model")
    if kinds <= {"cooling", "unavailable"}:
        return ServiceUnavailable(f"no healthy model in tier '{tier.name}': {why}", param="model")
    return InvalidRequest(f"no model in tier '{tier.name}' can serve this request: {why}", param="model")
