"""Cost-quality curves: what share of the reference model's cost a way of routing needs to reach
a share of the reference model's quality.

A *point* is (total cost, total correct answers) of one way of routing a set of prompts. Two
points can be mixed (route a random share of the prompts one way, the rest the other), so the
cost needed for a quality level is read off the lower hull of a method's points:

- `learned`: the learned policy's controller at each target of a grid (mixing two targets); a
  point is one target's replay, so a floor's calibration (which only says which target a floor
  needs) does not move the curve;
- `static`: one model for all prompts, as a static tier does (no mixing);
- `random`: random mixing of single models (the hull of the static points);
- `oracle`: per prompt, knowing the outcomes: the cheapest model that is correct, bought in
  order of the extra cost per extra correct answer.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["LEVELS", "Point", "cheapest_mix", "cheapest_single", "oracle_cost"]

LEVELS = (0.90, 0.95, 0.99)
Point = tuple[float, float]  # (cost, correct answers)


def cheapest_single(points: Sequence[Point], goal: float) -> float | None:
    """The cost of the cheapest point reaching `goal` correct answers."""
    costs = [c for c, q in points if q >= goal - 1e-9]
    return min(costs) if costs else None


def cheapest_mix(points: Sequence[Point], goal: float) -> float | None:
    """The least cost of a mix of two points (or one) reaching `goal` correct answers."""
    best = cheapest_single(points, goal)
    below = [(c, q) for c, q in points if q < goal]
    above = [(c, q) for c, q in points if q >= goal]
    for c1, q1 in below:
        for c2, q2 in above:
            if c2 > c1:
                cost = c1 + (c2 - c1) * (goal - q1) / (q2 - q1)
                best = cost if best is None else min(best, cost)
    return best


def oracle_cost(costs: np.ndarray, correct: np.ndarray, goal: float) -> float | None:
    """The least cost of per-prompt choices, knowing the outcomes, with `goal` correct answers."""
    rows = np.arange(len(costs))
    cheapest = np.argmin(costs, axis=1)
    base_cost = float(costs[rows, cheapest].sum())
    base_correct = float(correct[rows, cheapest].sum())
    if base_correct >= goal:
        return base_cost
    # a prompt the cheapest model gets wrong: one more correct answer for its cheapest correct model
    right = np.where(correct > 0, costs, np.inf).min(axis=1)
    extra = np.sort((right - costs[rows, cheapest])[(correct[rows, cheapest] == 0) & np.isfinite(right)])
    need = goal - base_correct
    whole = int(np.floor(need))
    if whole > len(extra) or (whole == len(extra) and need > whole):
        return None
    part = need - whole
    return base_cost + float(extra[:whole].sum()) + (part * float(extra[whole]) if part > 1e-12 else 0.0)
