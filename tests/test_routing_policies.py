"""The built-in policies as plain functions, and the registry's errors."""

from __future__ import annotations

import pytest

from routing_policies import Candidate, TierRoute, load_policy

TIER = TierRoute("t", 50, order=("b", "c"))


def cand(model: str, cost: int, quality: float = 70, latency: float | None = None) -> Candidate:
    return Candidate(model, quality, cost, 100, 100, latency)


def names(ranked: list[Candidate]) -> list[str]:
    return [c.model for c in ranked]


def test_cheapest_orders_by_cost_then_quality() -> None:
    ranked = load_policy("cheapest").rank([cand("a", 30), cand("b", 10), cand("c", 10, quality=90)], TIER)
    assert names(ranked) == ["c", "b", "a"]


def test_ordered_follows_the_preference_list_then_cost() -> None:
    ranked = load_policy("ordered").rank([cand("a", 1), cand("c", 50), cand("b", 99), cand("d", 0)], TIER)
    assert names(ranked) == ["b", "c", "d", "a"]


def test_fastest_prefers_observed_latency_and_breaks_ties_on_cost() -> None:
    ranked = load_policy("fastest").rank(
        [cand("a", 1), cand("b", 9, latency=0.2), cand("c", 5, latency=0.2), cand("d", 1, latency=0.9)], TIER)
    assert names(ranked) == ["c", "b", "d", "a"]  # never-observed models go last


def test_unknown_policy_is_a_readable_error() -> None:
    with pytest.raises(ValueError, match="unknown routing policy 'nope'"):
        load_policy("nope")
    with pytest.raises(ValueError, match="has no POLICY"):
        load_policy("routing_policies.base")
