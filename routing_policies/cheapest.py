"""`cheapest` (the default): lowest estimated cost first; higher quality (then name) breaks ties."""

from __future__ import annotations

from collections.abc import Sequence

from routing_policies.base import Candidate, TierRoute

__all__ = ["POLICY", "Cheapest"]


class Cheapest:
    name = "cheapest"
    # The order is the estimated cost, ties broken as candidates arrive (best quality, then name):
    # the router may sort the costs itself and build Candidates only for the models a request can try.
    ranks_by_cost = True

    def rank(self, candidates: Sequence[Candidate], tier: TierRoute) -> list[Candidate]:
        return sorted(candidates, key=lambda c: (c.estimated_cost_pico, -c.quality, c.model))


POLICY = Cheapest()
