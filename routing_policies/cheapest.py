"""`cheapest` (the default): lowest estimated cost first; higher quality breaks ties."""

from __future__ import annotations

from collections.abc import Sequence

from routing_policies.base import Candidate, TierRoute

__all__ = ["POLICY", "Cheapest"]


class Cheapest:
    name = "cheapest"

    def rank(self, candidates: Sequence[Candidate], tier: TierRoute) -> list[Candidate]:
        return sorted(candidates, key=lambda c: (c.estimated_cost_pico, -c.quality, c.model))


POLICY = Cheapest()
