"""Where routing decides: which models qualify for a tier, what each would cost for this request
(priced by the pricing core), and in which order the tier's policy wants them tried.

Filtering comes before any policy, and every exclusion keeps its reason: quality below the tier,
unavailable (no key), cooling down, a capability the request needs, or a context window the
request does not fit.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from math import inf
from typing import Any, NamedTuple, Protocol

from gateway.cache.prefix_cache import NO_PREDICTIONS, PrefixCache, PrefixPlan, Tenant
from gateway.cache.prefix_index import MemoryPrefixIndex
from gateway.cache.prefix_rules import OPENAI_MIN_TOKENS, Prediction
from gateway.config.settings import ModelSpec, Settings, TierSpec
from gateway.errors import InvalidRequest, PermissionDenied, ServiceUnavailable
from gateway.money.pricing import FlatRates, Price, Usage, estimate_cost, usd_text
from gateway.observability.metrics import Metrics
from gateway.routing.outputs import (
    REASONING_PRIOR,
    SHAPE_BASE,
    Observation,
    default_effort,
    effort_of,
    expected_tokens,
    prior_verbosity,
)
from gateway.routing.state import MemoryRoutingState, RoutingState, Snapshot
from gateway.tokens.counter import TokenCounter, encoding_name_for
from gateway.tokens.pool import CountingPool
from routing_policies import Candidate

__all__ = ["Excluded", "RoutePlan", "RoutedRequest", "Router", "unfit_reason"]

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


@dataclass(frozen=True, slots=True)
class Excluded:
    model: str
    reason: str
    kind: str  # quality | unavailable | cooling | capability | context | permission


class RoutePlan:
    """A routing decision: the best candidate, the others (built when first read), what was
    excluded and why, and what savings are measured against. Built once per routed request, so
    a plain slots class with a positional constructor (a dataclass with keywords costs more)."""

    __slots__ = ("tier", "first", "excluded", "baseline", "count", "size", "prefix", "head", "_ranked", "_rest",
                 "_said")

    def __init__(
        self, tier: TierSpec, first: Candidate, excluded: Sequence[Excluded], baseline: ModelSpec | None,
        count: int, size: int, prefix: PrefixPlan, head: str,
        ranked: list[Candidate] | None, rest: _Rest | None,
    ) -> None:
        self.tier = tier
        self.first = first  # the best
        self.excluded = excluded
        self.baseline = baseline  # what savings are measured against
        self.count = count  # candidates that qualified
        self.size = size  # candidates ranked: `count`, or fewer with a limit
        self.prefix = prefix  # prompt-cache predictions (long prompts only)
        self.head = head  # the route reason up to the estimate, when known beforehand (see _TierModels)
        self._ranked = ranked
        self._rest = rest  # what builds the ranking after `first` when first read
        self._said: tuple[str, int, str] | None = None

    @property
    def ranked(self) -> list[Candidate]:
        """All `size` candidates, best first. Most requests only ever need `first`, so the
        common path builds the rest only when this is read (failover, estimates)."""
        if self._ranked is None:
            if self._rest is None:
                self._ranked = [self.first]
            else:
                models, top, n, outs, latency = self._rest
                self._ranked = [self.first, *models.candidates(top[1:], n, outs, latency)]
                self._rest = None
        return self._ranked

    def reason(self, chosen: str, failures: Sequence[str] = ()) -> str:
        """The x-gateway-route text for the `chosen` model after the attempts that `failures`
        name ("model (reason)"); also the ledger's route: formatted once per outcome."""
        said = self._said
        if said is not None and said[0] == chosen and said[1] == len(failures):
            return said[2]
        text = self._format_reason(chosen, failures)
        self._said = (chosen, len(failures), text)
        return text

    def _format_reason(self, chosen: str, failures: Sequence[str]) -> str:
        first = self.first
        cost = first.estimated_cost_pico if first.model == chosen else next(
            c.estimated_cost_pico for c in self.ranked if c.model == chosen)
        text = (self.head or _reason_head(self.tier, self.count, len(self.excluded))) + usd_text(cost)
        if failures:
            text += "; failover from " + ", ".join(failures)
        return text

    def describe(self) -> dict[str, Any]:
        """The body of POST /v1/estimate."""
        def usd(pico: int) -> float:
            return pico / 10**12

        best = self.first
        return {
            "model": best.model,
            "tier": self.tier.name,
            "policy": self.tier.policy.name,
            "estimated_cost_usd": usd(best.estimated_cost_pico),
            "candidates": [
                {"model": c.model, "estimated_cost_usd": usd(c.estimated_cost_pico), "input_tokens": c.input_tokens,
                 "cached_tokens": c.cached_tokens, "cache_write_tokens": c.cache_write_tokens,
                 "expected_output_tokens": c.expected_output_tokens,
                 "expected_reasoning_tokens": c.expected_reasoning_tokens, "quality": c.quality}
                for c in self.ranked
            ],
            "excluded": [{"model": e.model, "reason": e.reason} for e in self.excluded],
            "baseline_model": self.baseline.name if self.baseline else None,
        }


# models, order, n, (visible outputs, reasoning), latency
_Rest = tuple["_TierModels", list[int], int, "_Outputs", dict[str, float]]


class _Demand(NamedTuple):
    """What a request's expected output depends on, beyond the model (`routing/outputs.py`)."""

    shape: str  # short | general | long | structured (`routing/outputs.py`)
    effort: str | None  # the request's reasoning_effort (None: each model's default)
    max_tokens: int | None
    n: int


class _Outputs(NamedTuple):
    """Expected tokens of a tier's rows for one demand (all `n` choices)."""

    visible: list[int]
    reasoning: list[int]
    total: list[int]  # visible + reasoning: what `FlatRates` prices (at the output rate)


@dataclass(frozen=True)
class _TierModels:
    """A tier's models, split once at start-up: the static exclusions (quality, no key) and the
    rest, with what the per-request fast path needs."""

    in_tier: list[ModelSpec]  # quality qualifies (the baseline is chosen among these)
    rows: tuple[tuple[ModelSpec, str], ...]  # available candidates, best quality first, and their encoding
    excluded: tuple[Excluded, ...]
    names: tuple[str, ...]
    encodings: tuple[str, ...]  # of the rows, each once (token counts are per encoding)
    min_context: float  # the smallest input window among the rows
    min_output: float  # the smallest maximum output among the rows
    prices: tuple[Price, ...]  # of the rows
    by_cost: bool  # the tier's policy ranks by estimated cost alone: the router sorts, cheaply
    flat: FlatRates | None  # the rows' prices, when by_cost and none has long-context tiers
    qualities: tuple[float, ...]  # of the rows
    head: str  # the route reason's start when no model is excluded per request
    flat_encoding: str | None  # the one encoding of all rows, when `flat` (the fast path's condition)

    def candidate(self, i: int, n: int, outs: _Outputs, latency: dict[str, float]) -> Candidate:
        """Row `i` for a prompt of `n` tokens and the expected outputs `outs` (`flat` prices)."""
        assert self.flat is not None
        name = self.names[i]
        return Candidate(name, self.qualities[i], self.flat.estimate(i, n, outs.total[i]), n, outs.visible[i],
                         latency.get(name), 0, 0, outs.reasoning[i])

    def candidates(self, rows: list[int], n: int, outs: _Outputs, latency: dict[str, float]) -> list[Candidate]:
        return [self.candidate(i, n, outs, latency) for i in rows]

    @classmethod
    def build(cls, tier: TierSpec, models: list[ModelSpec]) -> _TierModels:
        in_tier = [m for m in models if m.quality is not None and m.quality >= tier.min_quality]
        excluded = [
            Excluded(m.name, f"quality {m.quality if m.quality is not None else 'unset'} < {tier.min_quality:g}",
                     "quality")
            for m in models if m not in in_tier
        ]
        excluded += [Excluded(m.name, m.unavailable_reason, "unavailable") for m in in_tier if m.unavailable_reason]
        # Best quality first (then name): policies sort stably, so this order breaks their ties.
        ranked = sorted((m for m in in_tier if not m.unavailable_reason), key=lambda m: (-(m.quality or 0.0), m.name))
        rows = tuple((m, encoding_name_for(m.upstream_model)) for m in ranked)
        encodings = tuple(dict.fromkeys(enc for _, enc in rows))
        by_cost = bool(getattr(tier.policy, "ranks_by_cost", False))
        # Flat pricing folds reasoning into output: only where both have one rate.
        same_rate = all(not m.reasoning or m.price.base.reasoning == m.price.base.output for m, _ in rows)
        flat = FlatRates.of([m.price for m, _ in rows]) if by_cost and same_rate else None
        return cls(
            in_tier, rows, tuple(excluded), tuple(m.name for m, _ in rows), encodings,
            min((m.max_input_tokens or inf for m, _ in rows), default=inf),
            min((m.max_output_tokens or inf for m, _ in rows), default=inf),
            tuple(m.price for m, _ in rows), by_cost, flat,
            tuple(m.quality or 0.0 for m, _ in rows), _reason_head(tier, len(rows), len(excluded)),
            encodings[0] if flat is not None and len(encodings) == 1 else None,
        )


@dataclass(frozen=True, slots=True)
class _Order:
    """A tier's cost order for the expected outputs `outs` (learned from `learned` at snapshot
    `version`, or the request's max_tokens for all), holding for prompts of lo..hi tokens."""

    learned: dict[str, float]
    version: int
    lo: int
    hi: int
    outs: _Outputs
    top: list[int]  # row indices, cheapest first


def _reason_head(tier: TierSpec, count: int, excluded: int) -> str:
    return f"{tier.policy.name}; {count} candidate{'s' if count != 1 else ''}, {excluded} excluded; est $"


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
    def __init__(self, settings: Settings, state: RoutingState, prefix: PrefixCache) -> None:
        self._settings = settings
        self.state = state
        self._prefix = prefix
        self._priors = {name: prior_verbosity(spec.upstream_model) for name, spec in settings.models.items()}
        self._efforts = {name: default_effort(spec.upstream_model, spec.wire) for name, spec in settings.models.items()}
        self._latency: dict[str, float] = {}  # model -> running mean duration, this process
        # Quality, keys and prices never change at run time: split each tier's models once.
        models = sorted(settings.models.values(), key=lambda m: m.name)
        self._tiers = {tier.name: _TierModels.build(tier, models) for tier in settings.tiers.values()}
        self._baselines = {t.name: self._baseline(t, self._tiers[t.name].in_tier) for t in settings.tiers.values()}
        # Per (tier, demand): the expected outputs of all its rows, for (snapshot.verbosity, version).
        self._expected: dict[tuple[str, _Demand], tuple[dict[str, float], int, _Outputs]] = {}
        # The latest cost order found, by (tier, limit, demand): _Order.
        self._orders: dict[tuple[str, int | None, _Demand], _Order] = {}

    @classmethod
    def offline(cls, settings: Settings, tokens: TokenCounter) -> Router:
        """A router that has learned nothing and knows no warm prompt (`gateway route`, tests)."""
        index = MemoryPrefixIndex(settings.prefix.max_entries)
        return cls(settings, MemoryRoutingState(settings.routing),
                   PrefixCache(settings.prefix, tokens, CountingPool(tokens, settings.limits), index, Metrics()))

    def observe(self, spec: ModelSpec, request: RoutedRequest, usage: Usage) -> None:
        """A completed call: reset the model's failure streak, learn from its answer (its
        visible output against the request's base, its reasoning under the request's effort)."""
        shape, choices = request.shape, request.n
        visible = (usage.completion_tokens - usage.reasoning) / choices
        effort = (effort_of(request.body) or self._efforts[spec.name]) if spec.reasoning else None
        obs = Observation(shape, math.log(max(visible, 1) / self._prior_base(shape)), self._priors[spec.name],
                          effort, math.log1p(usage.reasoning / choices),
                          math.log1p(REASONING_PRIOR[effort]) if effort is not None else 0.0)
        self.state.record_success(spec.name, obs)

    def _prior_base(self, shape: str) -> int:
        return SHAPE_BASE.get(shape) or self._settings.routing.default_output_tokens

    def _demand(self, request: RoutedRequest) -> _Demand:
        return _Demand(request.shape, effort_of(request.body), request.max_output, request.n)

    def observe_latency(self, model: str, seconds: float) -> None:
        old = self._latency.get(model)
        self._latency[model] = seconds if old is None else old + 0.2 * (seconds - old)

    def tier(self, name: str) -> TierSpec | None:
        return self._settings.tiers.get(name)

    def encodings(self, tier: TierSpec) -> tuple[str, ...]:
        """The encodings a request to `tier` must be counted in (for `plan`'s `counts`)."""
        return self._tiers[tier.name].encodings

    async def plan(
        self, tier: TierSpec, request: RoutedRequest, counts: Mapping[str, int], caller: Tenant,
        limit: int | None = None, allowed: Sequence[str] | None = None,
    ) -> RoutePlan:
        """Rank the tier's candidates for this request; raises if none qualifies. `counts`: the
        prompt's tokens in each of the tier's `encodings`; `caller`: whose prompt-cache state the
        predictions may read. With `limit` (what a request may try), a policy that ranks by cost
        gets only that many built. `allowed`: the only models the caller's key may use (None:
        any)."""
        models = self._tiers[tier.name]
        if not models.rows:  # no model of the catalog reaches the tier's quality
            raise _no_candidate(tier, list(models.excluded))
        snapshot = self.state.current(models.names) or await self.state.snapshot(models.names)
        max_tokens = request.max_output
        enc = models.flat_encoding
        if enc is not None and allowed is None and not snapshot.cooling and not request.needs:
            n = counts[enc]  # the common case
            if (n + (max_tokens or 0) <= models.min_context and (not max_tokens or max_tokens <= models.min_output)
                    and n < OPENAI_MIN_TOKENS):
                return self._flat_plan(tier, models, snapshot, n, self._demand(request), limit)
        longest = max(counts.values())
        excluded = list(models.excluded)
        rows, prices = self._live(models, snapshot, request.needs, counts, longest, max_tokens, excluded, allowed)
        if not rows:
            raise _no_candidate(tier, excluded)
        inputs = [counts[enc] for _, enc in rows] if len(counts) > 1 else [*counts.values()] * len(rows)
        demand = self._demand(request)
        if rows is models.rows:
            outs = self._expected_outputs(tier.name, models, snapshot, demand)
        else:
            outs = self._outputs_of(rows, snapshot, demand)
        prefix = NO_PREDICTIONS
        if longest >= OPENAI_MIN_TOKENS:
            prefix = await self._prefix.plan([spec for spec, _ in rows], request.body, caller)
        cached = [(0, 0)] * len(rows) if not prefix.predictions else [
            _clamp(prefix.prediction(spec.name), n) for (spec, _), n in zip(rows, inputs, strict=True)]
        costs = [estimate_cost(spec.price, n, out, *c, reasoning=r) for (spec, _), n, out, r, c
                 in zip(rows, inputs, outs.visible, outs.reasoning, cached, strict=True)]
        order = sorted(range(len(rows)), key=costs.__getitem__)[:limit] if models.by_cost else range(len(rows))
        latency = self._latency
        candidates = [Candidate(rows[i][0].name, rows[i][0].quality or 0.0, costs[i], inputs[i], outs.visible[i],
                                latency.get(rows[i][0].name), *cached[i], outs.reasoning[i]) for i in order]
        ranked = candidates if models.by_cost else tier.policy.rank(candidates, tier.route)
        return RoutePlan(tier, ranked[0], excluded, self._baselines[tier.name], len(rows), len(ranked), prefix,
                         "", ranked, None)

    def _flat_plan(
        self, tier: TierSpec, models: _TierModels, snapshot: Snapshot, n: int, demand: _Demand, limit: int | None,
    ) -> RoutePlan:
        """The common case: a policy ranking by cost, nothing excluded per request (no key
        restriction, nothing cooling, no capability needed, the prompt fits every window), one
        prompt length for all, no prompt-cache predictions. The cost order found for an earlier
        request of the same demand holds while the prompt length stays in its range and the
        expected outputs are the same; only the first is priced and built now, the others when
        read."""
        found = self._orders.get((tier.name, limit, demand))
        if found is not None and found.lo <= n <= found.hi and (
                found.learned is snapshot.verbosity and found.version == snapshot.version):
            outs, top = found.outs, found.top  # the order found for an earlier request holds
        else:
            outs, top = self._cost_order(tier.name, models, snapshot, n, demand, limit)
        i, latency = top[0], self._latency
        return RoutePlan(tier, models.candidate(i, n, outs, latency), models.excluded, self._baselines[tier.name],
                         len(models.rows), len(top), NO_PREDICTIONS, models.head, None, (models, top, n, outs, latency))

    def _outputs_of(self, rows: Sequence[tuple[ModelSpec, str]], snapshot: Snapshot, demand: _Demand) -> _Outputs:
        visible, reasoning = [], []
        for spec, _ in rows:
            out, thought = self._expect(spec, snapshot, demand)
            visible.append(out)
            reasoning.append(thought)
        return _Outputs(visible, reasoning, [v + r for v, r in zip(visible, reasoning, strict=True)])

    def _expect(self, spec: ModelSpec, snapshot: Snapshot, demand: _Demand) -> tuple[int, int]:
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

    def _expected_outputs(self, tier: str, models: _TierModels, snapshot: Snapshot, demand: _Demand) -> _Outputs:
        """Expected outputs of all the tier's rows for `demand`; recomputed only when the
        snapshot's learned values changed (read-only: shared by the requests until then)."""
        memo = self._expected.get((tier, demand))
        if memo is not None and memo[0] is snapshot.verbosity and memo[1] == snapshot.version:
            return memo[2]
        outs = self._outputs_of(models.rows, snapshot, demand)
        if len(self._expected) >= 256:
            self._expected.clear()
        self._expected[tier, demand] = (snapshot.verbosity, snapshot.version, outs)
        return outs

    def _cost_order(
        self, tier: str, models: _TierModels, snapshot: Snapshot, n: int, demand: _Demand, limit: int | None
    ) -> tuple[_Outputs, list[int]]:
        """The expected outputs of the tier's rows for `demand` and the first `limit` rows by
        estimated cost for `n` input tokens; kept for the next requests with the range of prompt
        lengths over which the same order holds."""
        assert models.flat is not None
        outs = self._expected_outputs(tier, models, snapshot, demand)
        key = (tier, limit, demand)
        found = self._orders.get(key)
        if found is not None and found.lo <= n <= found.hi and found.outs == outs:  # a new snapshot, same figures
            top, lo, hi = found.top, found.lo, found.hi
        else:
            top, lo, hi = models.flat.cheapest(n, outs.total, limit)
        if len(self._orders) >= 256:
            self._orders.clear()
        self._orders[key] = _Order(snapshot.verbosity, snapshot.version, lo, hi, outs, top)
        return outs, top

    def _live(
        self, models: _TierModels, snapshot: Snapshot, needs: frozenset[str], counts: Mapping[str, int], longest: int,
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

    async def estimate(self, spec: ModelSpec, request: RoutedRequest, tokens: int, caller: Tenant) -> dict[str, Any]:
        """POST /v1/estimate for a model asked for by name: its cost for a prompt of `tokens`, no
        routing; prompt-cache predictions from the caller's own tenant only."""
        names = (spec.name,)
        snapshot = self.state.current(names) or await self.state.snapshot(names)
        output, reasoning = self._expect(spec, snapshot, self._demand(request))
        prefix = await self._prefix.plan([spec], request.body, caller) if tokens >= OPENAI_MIN_TOKENS \
            else NO_PREDICTIONS
        cached, write = _clamp(prefix.prediction(spec.name), tokens)
        cost = estimate_cost(spec.price, tokens, output, cached, write, reasoning) / 10**12
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
