"""The learned router's model: for a prompt and a candidate, the probability that the candidate
answers the prompt correctly.

Logistic heads over the prompt's features (`features.py`):

- a head per model the training data covers (its own weights and intercept);
- a *generic* head for every other model: `a(x) + s * b(x) + alpha + beta * s`, where `s` is the
  model's arena rating ((rating - 1250) / 100; the catalog's quality q is the rating (q * 5 +
  1000), by the request's category) and `a`, `b` are learned over every model of the data, so
  that how much a prompt rewards a better model is learned too.

It also carries, per model of the training data, a head that predicts log(1 + output tokens):
`gateway router eval` estimates those models' costs with it, where the gateway would use its own
learned estimates (`gateway/routing/outputs.py`).

The file (`.npz`, written by `gateway router train`) holds the feature keys seen in training
(sorted, as differences), the weights (16-bit for the heads that route, 8-bit for the length
heads, each column with its scale), the dense weights, the intercepts and a JSON description: the
columns of the heads, the generic head's coefficients, the floor calibration (a table pooled over
the training files, and one per number of candidates the files offered) and where the data came
from. Loading needs numpy only.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from routing_policies.learned.features import DENSE, dense_features, prompt_keys

__all__ = ["SHIPPED", "RouterModel", "canonical", "margin_for", "margin_for_candidates", "skill"]

SHIPPED = Path(__file__).with_name("router.npz")
FORMAT = 2  # 2: arithmetic features, quantized weights


def canonical(model: str) -> str:
    """A model name as the heads are keyed: lower case, without a provider prefix."""
    return model.rsplit("/", 1)[-1].lower()


def margin_for(margins: Sequence[tuple[float, float]], floor: float) -> float:
    """The margin of a calibration table ((floor, margin), ascending) at `floor`, interpolated."""
    if not margins:
        return 0.0
    return float(np.interp(floor, [f for f, _ in margins], [m for _, m in margins]))


def margin_for_candidates(by_count: dict[int, tuple[tuple[float, float], ...]], floor: float,
                          candidates: int) -> float:
    """The margin at `floor` for a decision among `candidates` models: each table's margin at
    `floor`, interpolated between the tables' candidate counts on a log scale (the nearest table's
    outside them)."""
    counts = sorted(by_count)
    values = [margin_for(by_count[c], floor) for c in counts]
    return float(np.interp(math.log(max(candidates, 1)), [math.log(c) for c in counts], values))


def skill(quality: float) -> float:
    """The generic head's skill of a model of catalog quality `quality` (0-100, rating = 5q + 1000)."""
    return (quality * 5.0 + 1000.0 - 1250.0) / 100.0


@dataclass(frozen=True)
class RouterModel:
    keys: np.ndarray  # (V,) int64, sorted: the feature keys seen in training
    weights: np.ndarray  # (V, H): the models' heads, the generic a and b, the length heads, times `scale`
    scale: np.ndarray  # (H,) float32: a column's weights are `weights[:, j] * scale[j]` (int16 when loaded)
    dense: np.ndarray  # (DENSE, H)
    bias: np.ndarray  # (H,)
    heads: dict[str, int]  # canonical model name (and its aliases) -> its column
    generic: tuple[int, int]  # the columns of a and b
    lengths: dict[str, int]  # canonical model name (and aliases) -> its length head's column
    alpha: float  # the generic head: alpha + beta * s
    beta: float
    margins: tuple[tuple[float, float], ...]  # (floor, margin): the calibration of the quality floor
    meta: dict[str, Any]  # training data, figures: the file's own description
    # candidate count -> (floor, margin): the calibration of decisions among that many candidates
    margins_by_count: dict[int, tuple[tuple[float, float], ...]] = field(default_factory=dict)

    def scores(self, text: str, token_ids: Sequence[int] | np.ndarray, input_tokens: int, category: str
               ) -> tuple[np.ndarray, float]:
        """Every head's linear score for a prompt (before the generic head's skill term), and the
        share of the prompt's features the training data had seen (its coverage)."""
        keys = prompt_keys(token_ids)
        h = dense_features(input_tokens, category, text) @ self.dense + self.bias
        if not len(keys):
            return h, 0.0
        pos = np.minimum(np.searchsorted(self.keys, keys), len(self.keys) - 1)
        hit = self.keys[pos] == keys
        rows = pos[hit]
        if len(rows):
            h = h + self.weights[rows].sum(axis=0, dtype=np.float32) * self.scale / math.sqrt(len(keys))
        return h, float(hit.mean())

    def probabilities(self, scores: np.ndarray, models: Sequence[tuple[str, float]]) -> np.ndarray:
        """P(correct) for each (name, quality): its own head if it has one, else the generic head."""
        a, b = self.generic
        z = np.empty(len(models))
        for i, (name, quality) in enumerate(models):
            col = self.heads.get(canonical(name))
            if col is not None:
                z[i] = scores[col]
            else:
                s = skill(quality)
                z[i] = scores[a] + s * scores[b] + self.alpha + self.beta * s
        return 1.0 / (1.0 + np.exp(-z))

    def output_tokens(self, scores: np.ndarray, model: str) -> int | None:
        """The expected output tokens of a model of the training data (None: not one of them)."""
        col = self.lengths.get(canonical(model))
        return None if col is None else max(int(round(math.expm1(scores[col]))), 1)

    def margin(self, floor: float, candidates: int | None = None) -> float:
        """The calibrated safety margin for `floor`: what held-out folds needed to reach it, for
        decisions among `candidates` models when the file has tables by candidate count (else,
        or with no count given, the pooled table)."""
        if candidates is not None and self.margins_by_count:
            return margin_for_candidates(self.margins_by_count, floor, candidates)
        return margin_for(self.margins, floor)

    def save(self, path: Path) -> None:
        meta = {**self.meta, "format": FORMAT, "heads": self.heads, "generic": list(self.generic),
                "lengths": self.lengths, "alpha": self.alpha, "beta": self.beta,
                "margins": [list(m) for m in self.margins],
                "margins_by_count": {str(c): [list(m) for m in t] for c, t in sorted(self.margins_by_count.items())}}
        routing = np.array(sorted({*self.heads.values(), *self.generic}), dtype=np.int64)
        weights = self.weights * self.scale
        lengths = np.array(sorted(set(self.lengths.values())), dtype=np.int64)
        arrays: dict[str, Any] = {
            "keys": np.diff(self.keys, prepend=0), "routing": routing, "lengths": lengths, "dense": self.dense,
            "bias": self.bias, "meta": np.array(json.dumps(meta, sort_keys=True)),
            **_quantized("w16", weights[:, routing], np.int16), **_quantized("w8", weights[:, lengths], np.int8)}
        with path.open("wb") as f:
            np.savez_compressed(f, **arrays)

    @classmethod
    def load(cls, path: Path = SHIPPED) -> RouterModel:
        """Raises ValueError if `path` is not a router file this version reads."""
        try:
            with np.load(path, allow_pickle=False) as f:
                meta = json.loads(str(f["meta"]))
                if meta.get("format") != FORMAT:
                    raise ValueError(f"{path}: router file format {meta.get('format')}, this gateway reads {FORMAT}")
                # kept as 16-bit integers with a scale per column (the length heads' 8-bit fit)
                width = len(f["routing"]) + len(f["lengths"])
                weights = np.zeros((len(f["keys"]), width), dtype=np.int16)
                scale = np.zeros(width, dtype=np.float32)
                weights[:, f["routing"]], scale[f["routing"]] = f["w16"], f["w16_scale"]
                weights[:, f["lengths"]], scale[f["lengths"]] = f["w8"], f["w8_scale"]
                model = cls(np.cumsum(f["keys"].astype(np.int64)), weights, scale,
                            f["dense"].astype(np.float32), f["bias"].astype(np.float32),
                            _columns(meta["heads"]), (int(meta["generic"][0]), int(meta["generic"][1])),
                            _columns(meta["lengths"]), float(meta["alpha"]), float(meta["beta"]),
                            tuple((float(a), float(b)) for a, b in meta["margins"]), meta,
                            {int(c): tuple((float(a), float(b)) for a, b in t)
                             for c, t in meta.get("margins_by_count", {}).items()})
        except (OSError, KeyError, json.JSONDecodeError, ValueError) as exc:
            raise ValueError(f"cannot read router file {path}: {exc}") from None
        columns = {*model.heads.values(), *model.generic, *model.lengths.values()}
        if model.dense.shape[0] != DENSE or columns != set(range(model.weights.shape[1])):
            raise ValueError(f"{path}: router file has the wrong shape for this gateway")
        return model


def _quantized(name: str, weights: np.ndarray, dtype: type[np.signedinteger[Any]]) -> dict[str, np.ndarray]:
    """`weights` as integers of `dtype`, one scale per column (its largest weight is the top value)."""
    top = np.iinfo(dtype).max
    scale = (np.maximum(np.abs(weights).max(axis=0, initial=0.0), 1e-12) / top).astype(np.float32)
    return {name: np.round(weights / scale).astype(dtype), f"{name}_scale": scale}


def _columns(names: dict[str, Any]) -> dict[str, int]:
    return {str(k): int(v) for k, v in names.items()}
