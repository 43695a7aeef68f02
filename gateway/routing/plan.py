"""What a routing decision is made of: the tier's models split once (per request category),
what each is expected to write for a request, and the plan a request gets (`RoutePlan`), whose
ranking after the first candidate is built only when read."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from math import inf
from typing import Any, NamedTuple

from gateway.cache.prefix_cache import PrefixPlan
from gateway.config.settings import ModelSpec, TierSpec
from gateway.money.pricing import FlatRates, Price, usd_text
from gateway.routing.categories import OVERALL
from gateway.tokens.counter import encoding_name_for
from routing_policies import Candidate

__all__ = ["Demand", "Excluded", "Order", "Outputs", "RoutePlan", "TierModels", "encodings_in_reach", "reason_head"]


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
        ranked: list[Candidate] | None, rest: Rest | None,
    ) -> None:
        self.tier = tier
        self.first = first  # the best
        self.excluded = excluded
        self.baseline = baseline  # what savings are measured against
        self.count = count  # candidates that qualified
        self.size = size  # candidates ranked: `count`, or fewer with a limit
        self.prefix = prefix  # prompt-cache predictions (long prompts only)
        self.head = head  # the route reason up to the estimate, when known beforehand (see TierModels)
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

    def exploring(self, candidate: Candidate) -> RoutePlan:
        """This plan with `candidate` (one of `ranked`) tried first, the others after it."""
        ranked = [candidate, *(c for c in self.ranked if c.model != candidate.model)]
        return RoutePlan(self.tier, candidate, self.excluded, self.baseline, self.count, len(ranked), self.prefix,
                         self.head, ranked, None)

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
        picked = first if first.model == chosen else next(c for c in self.ranked if c.model == chosen)
        text = (self.head or reason_head(self.tier, self.count, len(self.excluded))) + usd_text(
            picked.estimated_cost_pico)
        if picked.note:
            text += "; " + picked.note
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
Rest = tuple["TierModels", list[int], int, "Outputs", dict[str, float]]


class Demand(NamedTuple):
    """What a request's expected output depends on, beyond the model (`routing/outputs.py`)."""

    shape: str  # short | general | long | structured (`routing/outputs.py`)
    effort: str | None  # the request's reasoning_effort (None: each model's default)
    max_tokens: int | None
    n: int


class Outputs(NamedTuple):
    """Expected tokens of a tier's rows for one demand (all `n` choices)."""

    visible: list[int]
    reasoning: list[int]
    total: list[int]  # visible + reasoning: what `FlatRates` prices (at the output rate)


@dataclass(frozen=True)
class TierModels:
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
    qualities: tuple[float, ...]  # of the rows, for the request's category
    head: str  # the route reason's start when no model is excluded per request
    flat_encoding: str | None  # the one encoding of all rows, when `flat` (the fast path's condition)
    category: str  # whose quality scores made the split (`routing/categories.py`)
    key: str  # the tier and the category: what the router's memos of this split are kept by

    def candidate(self, i: int, n: int, outs: Outputs, latency: dict[str, float]) -> Candidate:
        """Row `i` for a prompt of `n` tokens and the expected outputs `outs` (`flat` prices)."""
        assert self.flat is not None
        name = self.names[i]
        return Candidate(name, self.qualities[i], self.flat.estimate(i, n, outs.total[i]), n, outs.visible[i],
                         latency.get(name), 0, 0, outs.reasoning[i])

    def candidates(self, rows: list[int], n: int, outs: Outputs, latency: dict[str, float]) -> list[Candidate]:
        return [self.candidate(i, n, outs, latency) for i in rows]

    @classmethod
    def build(cls, tier: TierSpec, models: list[ModelSpec], category: str = OVERALL) -> TierModels:
        quality = {m.name: m.quality_for(category) for m in models}
        in_tier = [m for m in models if (quality[m.name] or -1.0) >= tier.min_quality]
        which = "quality" if category == OVERALL else f"{category} quality"
        excluded = [
            Excluded(m.name, f"{which} {quality[m.name] if quality[m.name] is not None else 'unset'} < "
                             f"{tier.min_quality:g}", "quality")
            for m in models if m not in in_tier
        ]
        excluded += [Excluded(m.name, m.unavailable_reason, "unavailable") for m in in_tier if m.unavailable_reason]
        # Best quality first (then name): policies sort stably, so this order breaks their ties.
        ranked = sorted((m for m in in_tier if not m.unavailable_reason),
                        key=lambda m: (-(quality[m.name] or 0.0), m.name))
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
            tuple(quality[m.name] or 0.0 for m, _ in rows), reason_head(tier, len(rows), len(excluded), category),
            encodings[0] if flat is not None and len(encodings) == 1 else None, category, f"{tier.name}|{category}",
        )


@dataclass(frozen=True, slots=True)
class Order:
    """A tier's cost order for the expected outputs `outs` (learned from `learned` at snapshot
    `version`, or the request's max_tokens for all), holding for prompts of lo..hi tokens."""

    learned: dict[str, float]
    version: int
    lo: int
    hi: int
    outs: Outputs
    top: list[int]  # row indices, cheapest first


def encodings_in_reach(tier: TierSpec, models: list[ModelSpec]) -> tuple[str, ...]:
    """The encodings of every model that meets the tier's floor in some category."""
    def best(m: ModelSpec) -> float:
        return max([q for q in (m.quality, *m.quality_by_category.values()) if q is not None], default=-1.0)

    return tuple(dict.fromkeys(encoding_name_for(m.upstream_model) for m in models
                               if not m.unavailable_reason and best(m) >= tier.min_quality))


def reason_head(tier: TierSpec, count: int, excluded: int, category: str = OVERALL) -> str:
    kind = "" if category == OVERALL else f"category {category}; "
    return f"{tier.policy.name}; {count} candidate{'s' if count != 1 else ''}, {excluded} excluded; {kind}est $"
