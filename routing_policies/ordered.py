"""`ordered`: the tier's explicit preference list (`order:` in config); models not listed follow,
cheapest first."""

from __future__ import annotations

from collections.abc import Sequence

from routing_policies.base import Candidate, TierRoute

__all__ = ["POLICY", "Ordered"]


class Ordered:
    name = "ordered"

    def rank(self, candidates: Sequence[Candidate], tier: TierRoute) -> list[Candidate]:
        position = {name: i for i, name in enumerate(tier.order)}
        unlisted = len(position)
        return sorted(candidates, key=lambda c: (position.get(c.model, unlisted), c.estimated_cost_pico, c.model))


POLICY = Ordered()
