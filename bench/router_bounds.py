"""How far can a two-model router get on a pair file when it knows the answers' lengths before
asking? A bound for issue 15's GSM8K figure, not a router the gateway could run.

Each router here sees features the gateway never has at request time: the length of the strong
model's actual answer and of the weak model's, and (to be generous) each prompt's true cost with
both models. It ranks prompts by the predicted gain of asking the strong model per extra cost,
offline, with one threshold for all prompts (no controller), and the share of the strong model's
cost needed for a quality level is read off the lower hull as `gateway router eval` reads it.

- *5-fold*: logistic regressions (correct or not, per model) fitted on four folds, predicting the
  fifth: what such features would give a router evaluated honestly.
- *in-sample, binned*: the gain rate per decile of one feature, measured on the rows it ranks (it
  has seen the answers: flatters itself).

    python bench/router_bounds.py [--data ../shared/data/routing/rl_gsm8k_train.csv.gz] [--level 0.95]

It fits with scipy, as training does (`pip install '.[train]'`).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy.optimize import minimize

from gateway.money.price_table import load_price_table
from gateway.routing.auto.curves import Point, cheapest_mix
from gateway.routing.auto.data import OutcomeSet, load_outcomes
from gateway.routing.auto.fit import logistic

_DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "routing" / "rl_gsm8k_train.csv.gz"


def _logistic(x: np.ndarray, y: np.ndarray, reg: float = 1e-3) -> np.ndarray:
    """Weights of an L2-regularised logistic regression (x has a column of ones), fitted with the
    router's own loss (`gateway.routing.auto.fit.logistic`) by L-BFGS, as its heads are."""

    def objective(w: np.ndarray) -> tuple[float, np.ndarray]:
        value, r = logistic(x @ w, y)
        return value + 0.5 * reg * float(w @ w), x.T @ r + reg * w

    weights: np.ndarray = minimize(objective, np.zeros(x.shape[1]), jac=True, method="L-BFGS-B").x
    return weights


def _cross_fitted(x: np.ndarray, y: np.ndarray, folds: int = 5, seed: int = 0) -> np.ndarray:
    """Held-out P(y = 1) for every row, from fits on the other folds."""
    x = np.column_stack([x, np.ones(len(x))])
    fold = np.random.default_rng(seed).permutation(len(y)) % folds
    p = np.zeros(len(y))
    for k in range(folds):
        w = _logistic(x[fold != k], y[fold != k])
        p[fold == k] = 1.0 / (1.0 + np.exp(-(x[fold == k] @ w)))
    return p


def _binned(feature: np.ndarray, gain: np.ndarray, bins: int = 10) -> np.ndarray:
    """Each row's mean gain over the rows in its tenth of `feature` (in-sample; equal values stay
    together, so a constant feature is one bin)."""
    edges = np.quantile(feature, np.linspace(0, 1, bins + 1)[1:-1])
    _, which = np.unique(np.searchsorted(edges, feature, side="right"), return_inverse=True)
    means: np.ndarray = np.bincount(which, weights=gain) / np.bincount(which)
    return means[which]


def share(data: OutcomeSet, score: np.ndarray, level: float) -> float | None:
    """The least share of the strong model's cost reaching `level` of its quality, asking the strong
    model for the prompts of highest `score` first (mixing two thresholds)."""
    strong, weak = data.reference, 1 - data.reference
    costs, correct = data.costs().astype(float), data.correct
    order = np.argsort(-score, kind="stable")  # after k prompts asked: the weak model for all, plus k swaps
    cost = costs[:, weak].sum() + np.concatenate(([0.0], np.cumsum(costs[order, strong] - costs[order, weak])))
    right = correct[:, weak].sum() + np.concatenate(([0.0], np.cumsum(correct[order, strong] - correct[order, weak])))
    points: list[Point] = list(zip(cost.tolist(), right.tolist(), strict=True))
    needed = cheapest_mix(points, level * float(correct[:, strong].sum()))
    return None if needed is None else needed / float(costs[:, strong].sum())


def routers(data: OutcomeSet) -> dict[str, np.ndarray]:
    """Each router's score per prompt: the gain of asking the strong model per extra cost."""
    strong, weak = data.reference, 1 - data.reference
    costs = data.costs().astype(float)
    extra: np.ndarray = np.maximum(costs[:, strong] - costs[:, weak], 1.0)
    log_in = np.log(data.input_tokens.astype(float))
    log_out = np.log1p(data.output_tokens.astype(float))
    gain = data.correct[:, strong] - data.correct[:, weak]

    def fitted(x: np.ndarray) -> np.ndarray:
        gained: np.ndarray = _cross_fitted(x, data.correct[:, strong]) - _cross_fitted(x, data.correct[:, weak])
        per_cost: np.ndarray = gained / extra
        return per_cost

    found: dict[str, Callable[[], np.ndarray]] = {
        "5-fold: prompt length": lambda: fitted(log_in[:, None]),
        "5-fold: prompt length + strong answer's length": lambda: fitted(np.c_[log_in, log_out[:, strong]]),
        "5-fold: prompt length + both answers' lengths": lambda: fitted(np.c_[log_in, log_out]),
        "in-sample, binned: strong answer's length": lambda: _binned(log_out[:, strong], gain) / extra,
        "in-sample, binned: prompt length": lambda: _binned(log_in, gain) / extra,
    }
    return {name: make() for name, make in found.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=_DEFAULT)
    parser.add_argument("--level", type=float, default=0.95)
    args = parser.parse_args()
    data = load_outcomes(args.data, load_price_table())
    if len(data.models) != 2:
        raise SystemExit(f"{args.data}: a pair file is needed (it has {len(data.models)} models)")
    print(f"{args.data.name}: {len(data.prompts)} prompts; share of {data.models[data.reference]}'s cost "
          f"for {args.level:.0%} of its quality")
    for name, score in routers(data).items():
        found = share(data, score, args.level)
        print(f"  {name:50s} {'unreachable' if found is None else f'{found:.1%}'}")
    shares = [share(data, np.random.default_rng(seed).random(len(data.prompts)), args.level) for seed in range(20)]
    print(f"  {'random order (mean of 20)':50s} {np.mean([s for s in shares if s is not None]):.1%}")


if __name__ == "__main__":
    main()
