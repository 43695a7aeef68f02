"""Fitting the router's heads: L2-regularised logistic regression (correct or not) and least
squares (log output tokens) over sparse prompt features, by L-BFGS (scipy, at training only)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.optimize import minimize

from routing_policies.learned.features import DENSE, MAX_CHARS, dense_features

__all__ = ["Design", "Linear", "fit_generic", "fit_head", "vocabulary"]

_MAX_ITER = 500


def vocabulary(key_sets: Sequence[np.ndarray], min_count: int) -> np.ndarray:
    """The keys seen in at least `min_count` prompts (sorted)."""
    keys, counts = np.unique(np.concatenate(key_sets), return_counts=True)
    return keys[counts >= min_count]


@dataclass(frozen=True)
class Design:
    """Prompts as the router sees them: sparse key features and dense features."""

    x: sparse.csr_matrix  # (n, V)
    d: np.ndarray  # (n, DENSE)

    @classmethod
    def of(cls, vocab: np.ndarray, key_sets: Sequence[np.ndarray], inputs: Sequence[int],
           categories: Sequence[str], texts: Sequence[str]) -> Design:
        rows, cols, vals = [], [], []
        for i, keys in enumerate(key_sets):
            if not len(keys):
                continue
            pos = np.minimum(np.searchsorted(vocab, keys), len(vocab) - 1)
            hit = pos[vocab[pos] == keys]
            rows.append(np.full(len(hit), i))
            cols.append(hit)
            vals.append(np.full(len(hit), 1.0 / np.sqrt(len(keys))))
        empty = [np.zeros(0, dtype=np.int64)]
        x = sparse.csr_matrix((np.concatenate(vals or [np.zeros(0)]),
                               (np.concatenate(rows or empty), np.concatenate(cols or empty))),
                              shape=(len(key_sets), len(vocab)))
        d = np.array([dense_features(int(n), c, t[:MAX_CHARS]) for n, c, t in
                      zip(inputs, categories, texts, strict=True)]).reshape(-1, DENSE)
        return cls(x, d)

    def rows(self, index: np.ndarray) -> Design:
        return Design(self.x[index], self.d[index])


@dataclass(frozen=True)
class Linear:
    """One head: score = x @ w + d @ v + b."""

    w: np.ndarray
    v: np.ndarray
    b: float


Loss = Callable[[np.ndarray, np.ndarray], tuple[float, np.ndarray]]  # (scores, targets) -> (loss, d loss / d score)


def logistic(z: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    return float(np.sum(np.logaddexp(0.0, z) - y * z)), 1.0 / (1.0 + np.exp(-z)) - y


def squared(z: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    r = z - y
    return float(0.5 * r @ r), r


def fit_head(design: Design, y: np.ndarray, reg: float, loss: Loss = logistic, reg_dense: float = 0.01) -> Linear:
    """One model's head over its rows."""
    x, d = design.x, design.d
    width = x.shape[1]

    def objective(params: np.ndarray) -> tuple[float, np.ndarray]:
        w, v, b = params[:width], params[width:width + DENSE], params[-1]
        value, r = loss(x @ w + d @ v + b, y)
        grad = np.concatenate((x.T @ r + reg * w, d.T @ r + reg_dense * v, [r.sum()]))
        return value + 0.5 * reg * float(w @ w) + 0.5 * reg_dense * float(v @ v), grad

    start = np.zeros(width + DENSE + 1)
    if loss is squared:
        start[-1] = float(np.mean(y))
    found = minimize(objective, start, jac=True, method="L-BFGS-B", options={"maxiter": _MAX_ITER}).x
    return Linear(found[:width], found[width:width + DENSE], float(found[-1]))


@dataclass(frozen=True)
class Generic:
    """The generic head: score = a(x) + s * b(x) + alpha + beta * s for a model of skill s."""

    a: Linear
    b: Linear
    alpha: float
    beta: float


def fit_generic(parts: Sequence[tuple[Design, np.ndarray, np.ndarray]], reg: float, reg_dense: float = 0.01
                ) -> Generic:
    """`parts`: (prompts, skills (n, m) of each row's models for its category, outcomes (n, m))."""
    width = parts[0][0].x.shape[1]
    size = 2 * (width + DENSE) + 2

    def objective(params: np.ndarray) -> tuple[float, np.ndarray]:
        wa, wb = params[:width], params[width:2 * width]
        va, vb = params[2 * width:2 * width + DENSE], params[2 * width + DENSE:2 * width + 2 * DENSE]
        alpha, beta = params[-2], params[-1]
        total, grad = 0.0, np.zeros(size)
        for design, skills, outcomes in parts:
            base_a = design.x @ wa + design.d @ va
            base_b = design.x @ wb + design.d @ vb
            ra, rb = np.zeros(len(base_a)), np.zeros(len(base_a))
            for j in range(outcomes.shape[1]):
                s = skills[:, j]
                value, r = logistic(base_a + s * base_b + alpha + beta * s, outcomes[:, j])
                total += value
                ra += r
                rb += s * r
                grad[-2] += r.sum()
                grad[-1] += (s * r).sum()
            grad[:width] += design.x.T @ ra
            grad[width:2 * width] += design.x.T @ rb
            grad[2 * width:2 * width + DENSE] += design.d.T @ ra
            grad[2 * width + DENSE:2 * width + 2 * DENSE] += design.d.T @ rb
        sparse_w, rest = params[:2 * width], params[2 * width:]  # rest: the dense weights, alpha and beta
        total += 0.5 * reg * float(sparse_w @ sparse_w) + 0.5 * reg_dense * float(rest @ rest)
        grad[:2 * width] += reg * sparse_w
        grad[2 * width:] += reg_dense * rest
        return total, grad

    p = minimize(objective, np.zeros(size), jac=True, method="L-BFGS-B", options={"maxiter": _MAX_ITER}).x
    a = Linear(p[:width], p[2 * width:2 * width + DENSE], 0.0)
    b = Linear(p[width:2 * width], p[2 * width + DENSE:2 * width + 2 * DENSE], 0.0)
    return Generic(a, b, float(p[-2]), float(p[-1]))

