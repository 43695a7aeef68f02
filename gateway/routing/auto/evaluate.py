"""`gateway router eval`: the router as shipped, replayed on per-prompt outcome files.

Every prompt of a file is offered to the learned policy's decision (the router model's
predictions, the controller) with the file's models as candidates, in a fixed shuffled order
(the order requests would arrive in), once per quality floor of a grid (its target: the floor plus
the router file's margin for that many candidates); each decision is then paid and scored with
the file's own outcomes. Costs the policy sees are estimates (input tokens x price + the length
head's expected output x price); costs it is charged are what the file says each answer took,
priced by the pricing core. Nothing is trained here.

The bootstrap intervals resample prompts (the decisions stay as made) 200 times.

A file the router was trained on (same sha256 as one in its `trained_on`) replays in-sample, so its
figures flatter the router: the document marks it (`in_training`) and carries the held-out
figures the training measured for it (`held_out`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gateway.money.pricing import estimate_cost
from gateway.routing.auto.curves import LEVELS, Point, cheapest_mix, cheapest_single, oracle_cost
from gateway.routing.auto.data import OutcomeSet, rating_for
from gateway.tokens.counter import TokenCounter
from routing_policies.learned import DEFAULT_FLOOR
from routing_policies.learned.controller import FloorController
from routing_policies.learned.features import MAX_CHARS
from routing_policies.learned.model import RouterModel
from routing_policies.learned.policy import MIN_COVERAGE

__all__ = ["FLOORS", "Predictions", "evaluate", "predict", "replay", "report"]

FLOORS = tuple(round(f, 3) for f in np.arange(0.60, 1.101, 0.01))  # the learned curve's targets
_BOOTSTRAP = 200
_GENERAL_OUTPUT = 256  # a model without a length head: the gateway's default (routing.default_output_tokens)


@dataclass(frozen=True)
class Predictions:
    """What the policy sees of a file's prompts."""

    p: np.ndarray  # (n, m) P(correct)
    estimated: np.ndarray  # (n, m) estimated cost, pico-USD
    sure: np.ndarray  # (n,) enough of the prompt known to the model


def quality_of(model: str, category: str) -> float:
    """A data model's catalog quality (0-100) for a category, from its arena rating."""
    rating = rating_for(model, category)
    if rating is None:
        raise ValueError(f"model '{model}' has no head in the router file and no known arena rating")
    return (rating - 1000.0) / 5.0


def predict(model: RouterModel, data: OutcomeSet, tokens: TokenCounter) -> Predictions:
    """The router model's predictions for every prompt and model of `data`, as the policy makes them."""
    encoding = tokens.encoding("o200k_base")
    n, m = data.correct.shape
    p, est, sure = np.zeros((n, m)), np.zeros((n, m)), np.zeros(n, dtype=bool)
    for i, (prompt, inputs, category) in enumerate(zip(data.prompts, data.input_tokens, data.categories, strict=True)):
        text = prompt[:MAX_CHARS]
        scores, coverage = model.scores(text, encoding.encode(text, disallowed_special=()), int(inputs), category)
        known = [(name, 0.0 if name in model.heads else quality_of(name, category)) for name in data.models]
        p[i] = model.probabilities(scores, known)
        for j, (name, price) in enumerate(zip(data.models, data.prices, strict=True)):
            out = model.output_tokens(scores, name) or _GENERAL_OUTPUT
            est[i, j] = estimate_cost(price, int(inputs), out)
        sure[i] = coverage >= MIN_COVERAGE
    return Predictions(p, est, sure)


def replay(pred: Predictions, ref: int, target: float, order: np.ndarray) -> np.ndarray:
    """The candidate the controller picks for each prompt, prompts arriving in `order`."""
    controller = FloorController(target)
    choices = np.zeros(len(order), dtype=np.int64)
    for i in order:
        choices[i] = controller.choose(pred.p[i], pred.estimated[i], ref, bool(pred.sure[i]))
        controller.record(pred.p[i], pred.estimated[i], ref)
    return choices


def _shares(points: Callable[[np.ndarray], dict[str, Any]], rows: np.ndarray, costs: np.ndarray,
            correct: np.ndarray, ref: int) -> dict[str, dict[str, float | None]]:
    """Each method's share of the reference's cost at each level, over prompts `rows`."""
    ref_cost, ref_correct = float(costs[rows, ref].sum()), float(correct[rows, ref].sum())
    found = points(rows)
    out: dict[str, dict[str, float | None]] = {}
    for method in ("learned", "static", "random", "oracle"):
        out[method] = {}
        for level in LEVELS:
            goal = level * ref_correct
            if method == "oracle":
                cost = oracle_cost(costs[rows], correct[rows], goal)
            elif method == "static":
                cost = cheapest_single(found["static"], goal)
            else:
                cost = cheapest_mix(found[method], goal)
            out[method][f"{level:.2f}"] = None if cost is None else cost / ref_cost
    return out


def report(data: OutcomeSet, pred: Predictions, target_of: Callable[[float], float], seed: int = 0,
           floor: float = DEFAULT_FLOOR, folds: np.ndarray | None = None,
           fold_targets: Sequence[Callable[[float], float]] = ()) -> dict[str, Any]:
    """The eval's figures for one file: shares by method and level with bootstrap intervals, and
    the quality the calibrated floor reached.

    Cross-fitted (training's held-out report): with `folds` (each prompt's fold) and
    `fold_targets` (per fold, the target of a floor as calibrated without that fold's prompts),
    a prompt's decision at `floor` is the one the controller makes at its own fold's target (every
    prompt still passes through the controller, in the same order). The learned curve's points are
    the controller at each target of `FLOORS`, one for all prompts: a point blending the folds'
    targets would cost more than the curve at its quality (the calibration names targets only)."""
    ref = data.reference
    costs, correct = data.costs().astype(float), data.correct
    n = len(correct)
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    done: dict[float, np.ndarray] = {}

    def decide_target(target: float) -> np.ndarray:
        if target not in done:
            done[target] = replay(pred, ref, target, order)
        return done[target]

    def decide(f: float) -> np.ndarray:
        if folds is None or not fold_targets:
            return decide_target(target_of(f))
        picked = np.zeros(n, dtype=np.int64)
        for k, of in enumerate(fold_targets):
            mine = folds == k
            picked[mine] = decide_target(of(f))[mine]
        return picked

    picks = [decide_target(t) for t in FLOORS]
    at_floor = decide(floor)
    index = np.arange(n)

    def points(rows: np.ndarray) -> dict[str, list[Point]]:
        static = [(float(costs[rows, j].sum()), float(correct[rows, j].sum())) for j in range(correct.shape[1])]
        learned = [(float(costs[rows, c[rows]].sum()), float(correct[rows, c[rows]].sum())) for c in picks]
        return {"static": static, "random": static, "learned": learned + [static[ref]]}

    main = _shares(points, index, costs, correct, ref)
    boots = [_shares(points, rng.integers(0, n, n), costs, correct, ref) for _ in range(_BOOTSTRAP)]
    reached = float(correct[index, at_floor].sum() / correct[:, ref].sum())
    reached_boot = []
    for _ in range(_BOOTSTRAP):
        rows = rng.integers(0, n, n)
        reached_boot.append(float(correct[rows, at_floor[rows]].sum() / max(correct[rows, ref].sum(), 1.0)))
    return {
        "file": data.file, "n": n, "reference": data.models[ref], **main,
        "floor": floor, "floor_reached": reached,
        "floor_reached_interval": _interval(reached_boot),
        "intervals": {method: {level: _interval([b[method][level] for b in boots]) for level in main[method]}
                      for method in main},
        "cost_at_floor": float(costs[index, at_floor].sum() / costs[:, ref].sum()),
    }


def _interval(values: Sequence[float | None]) -> list[float] | None:
    """The 2.5 and 97.5 percentiles (None when a level was unreachable in any resample)."""
    if any(v is None for v in values):
        return None
    found = np.percentile(np.array(values, dtype=float), [2.5, 97.5])
    return [float(found[0]), float(found[1])]


def _calibrated(model: RouterModel, candidates: int) -> Callable[[float], float]:
    """A floor's target: the floor plus the router file's margin for `candidates` models."""
    return lambda floor: floor + model.margin(floor, candidates)


def evaluate(model: RouterModel, sets: Sequence[OutcomeSet], tokens: TokenCounter, seed: int = 0,
             floor: float = DEFAULT_FLOOR) -> dict[str, Any]:
    """`gateway router eval --json`'s document."""
    datasets = []
    trained = {t.get("sha256"): t.get("file") for t in model.meta.get("trained_on", ())}
    held_out = {h.get("file"): h for h in model.meta.get("held_out", ())}
    for data in sets:
        pred = predict(model, data, tokens)
        document = report(data, pred, _calibrated(model, len(data.models)), seed, floor)
        name = trained.get(hashlib.sha256(Path(data.file).read_bytes()).hexdigest())
        document["in_training"] = name is not None
        if name is not None:
            document["held_out"] = held_out.get(name)
        datasets.append(document)
    return {"datasets": datasets}
