"""`learned`: the cheapest candidate predicted to answer as well as the tier's reference model.

Per request: the router model (`model.py`) predicts each candidate's probability of answering
the prompt correctly; the controller (`controller.py`) picks the candidate that keeps the
tier's expected quality at `quality_floor` (plus the calibrated margin) x the reference's for
the least money. The margin is the router file's for as many candidates as the request offers
(known when it is ranked; a tier's count seldom changes, so its target does not either). The
reference is the tier's `baseline_model`, else its best-quality candidate. The others follow (for
failover) by the same measure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from routing_policies.base import Candidate, Prompt, TierRoute
from routing_policies.learned.controller import FloorController
from routing_policies.learned.model import RouterModel

__all__ = ["LearnedPolicy"]

MIN_COVERAGE = 0.3  # below this share of known features, each request is decided alone


class LearnedPolicy:
    name = "learned"
    reads_prompt = True

    def __init__(self, model: RouterModel, floor: float) -> None:
        self.model = model
        self.floor = floor
        self.controller = FloorController(floor + model.margin(floor))
        self._targets: dict[int, float] = {}  # candidate count -> the controller's target

    def target(self, candidates: int) -> float:
        """The controller's target for a decision among `candidates` models: the floor plus its margin."""
        found = self._targets.get(candidates)
        if found is None:
            found = self._targets[candidates] = self.floor + self.model.margin(self.floor, candidates)
        return found

    def rank(self, candidates: Sequence[Candidate], tier: TierRoute, prompt: Prompt | None = None) -> list[Candidate]:
        if prompt is None or len(candidates) < 2:
            return list(candidates)
        ref = next((i for i, c in enumerate(candidates) if c.model == tier.reference), 0)
        self.controller.target = self.target(len(candidates))
        scores, coverage = self.model.scores(prompt.text, prompt.token_ids, prompt.input_tokens, prompt.category)
        p = self.model.probabilities(scores, [(c.model, c.quality) for c in candidates])
        k = np.array([float(c.estimated_cost_pico) for c in candidates])
        sure = coverage >= MIN_COVERAGE
        pick = self.controller.choose(p, k, ref, sure)
        if prompt.routed:
            self.controller.record(p, k, ref)
        rate = self.controller.rate if sure and self.controller.rate is not None else None
        value = rate * p - k if rate is not None else -k
        order = [pick, *sorted((i for i in range(len(candidates)) if i != pick), key=lambda i: -value[i])]
        note = (f"p {p[pick]:.2f} vs {p[ref]:.2f} for {candidates[ref].model}, floor {self.floor:g}"
                + ("" if sure else ", unsure: decided alone"))
        return [replace(candidates[pick], note=note), *(candidates[i] for i in order[1:])]
