"""`learned`: the policy of the `auto` tier. A tier using it picks, per request, the cheapest
candidate that keeps the tier's quality at `quality_floor` x its reference model's, from a
model of which candidate answers which prompt well (trained by `gateway router train` on public
per-prompt outcomes; the default ships in this package as `router.npz`).

    tiers:
      auto: {policy: learned, quality_floor: 0.95, baseline_model: gpt-5.1}
"""

from __future__ import annotations

from pathlib import Path

from routing_policies.base import PolicyOptions
from routing_policies.learned.model import SHIPPED, RouterModel
from routing_policies.learned.policy import LearnedPolicy

__all__ = ["DEFAULT_FLOOR", "LearnedPolicy", "RouterModel", "create"]

DEFAULT_FLOOR = 0.95


def create(options: PolicyOptions) -> LearnedPolicy:
    """A policy of its own for one tier (its recent decisions are the tier's)."""
    floor = DEFAULT_FLOOR if options.quality_floor is None else options.quality_floor
    if not 0 < floor <= 1.2:
        raise ValueError(f"quality_floor must be in (0, 1.2], got {floor:g}")
    return LearnedPolicy(RouterModel.load(Path(options.router_model) if options.router_model else SHIPPED), floor)
