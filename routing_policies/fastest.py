"""`fastest`: lowest recently observed duration first (unobserved models count as unknown and go
after observed ones); estimated cost breaks ties."""

from __future__ import annotations

import math
from collections.abc import Sequence

from routing_policies.base import Candidate, TierRoute

__all__ = ["POLICY", "Fastest"]


class Fastest:
    name = "fastest"

    def rank(self, candidates: Sequence[Candidate], tier: TierRoute) -> list[Candidate]:
        def key(c: Candidate) -> tuple[float, int, str]:
            return (c.latency_s if c.latency_s is not None else math.inf, c.estimated_cost_pico, c.model)

        return sorted(candidates, key=key)


POLICY = Fastest()
