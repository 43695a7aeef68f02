"""`gateway router train`: the router model from per-prompt outcome files.

1. Each prompt becomes its features (`routing_policies/learned/features.py`).
2. Cross-validation: the rows of every file are split in `folds`; for each fold, heads are fitted
   on the others and predict the fold's rows. These held-out predictions give the report (the
   figures of `gateway router eval`, but on rows the model had not seen) and the calibration: for
   each quality floor, the margin the controller's target needs so that the quality reached on
   held-out rows is the floor: the mean over the files offering a number of candidates (a table
   per count), and over all files (a fallback). The report is cross-fitted: a fold's
   prompts are decided with the margins calibrated on the other folds' prompts.
3. The shipped model: heads fitted on all rows, with the calibration of all held-out rows.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy import sparse

from gateway.routing.auto.data import DATA_MODELS, OutcomeSet, rating_for
from gateway.routing.auto.evaluate import Predictions, predict, replay, report
from gateway.routing.auto.fit import Design, Linear, fit_generic, fit_head, squared, vocabulary
from gateway.routing.auto.options import TrainingConfig
from gateway.tokens.counter import TokenCounter
from routing_policies.learned.features import DENSE, MAX_CHARS, prompt_keys
from routing_policies.learned.model import RouterModel, margin_for_candidates, skill

__all__ = ["TrainingConfig", "train"]

CALIBRATED_FLOORS = (0.80, 0.85, 0.90, 0.95, 0.97, 0.99, 1.0)
# A margin is kept within this: past it the predictions are off (or the held-out quality has a plateau,
# where any target below the floor reaches it), not the floor.
MAX_MARGIN = 0.05
# the controller targets tried (to 0.001: a step of 0.005 moves the quality reached by about 0.6 points);
# a margin is within MAX_MARGIN of its floor, so these cover every floor of CALIBRATED_FLOORS
_TARGETS = np.round(np.arange(min(CALIBRATED_FLOORS) - MAX_MARGIN, max(CALIBRATED_FLOORS) + MAX_MARGIN + 1e-9,
                              0.001), 4)


@dataclass(frozen=True)
class _Set:
    data: OutcomeSet
    keys: list[np.ndarray]
    folds: np.ndarray


def _aliases(model: str) -> tuple[str, ...]:
    known = DATA_MODELS.get(model)
    return (model, *known.aliases) if known is not None else (model,)


def _fit(sets: Sequence[_Set], rows: Sequence[np.ndarray], config: TrainingConfig,
         margins: tuple[tuple[float, float], ...] = (), meta: dict[str, Any] | None = None) -> RouterModel:
    """A model from the rows `rows[i]` of each set."""
    vocab = vocabulary([k for s, r in zip(sets, rows, strict=True) for k in (s.keys[i] for i in r)], config.min_count)
    designs = [Design.of(vocab, [s.keys[i] for i in r], s.data.input_tokens[r], [s.data.categories[i] for i in r],
                         [s.data.prompts[i] for i in r]) for s, r in zip(sets, rows, strict=True)]
    models = sorted({m for s in sets for m in s.data.models})
    heads: list[Linear] = []
    lengths: list[Linear] = []
    for model in models:
        having = [(d, s.data, r, s.data.models.index(model))
                  for s, d, r in zip(sets, designs, rows, strict=True) if model in s.data.models]
        design = _stack([d for d, *_ in having])
        correct = np.concatenate([data.correct[r, j] for _, data, r, j in having])
        written = np.concatenate([np.log1p(data.output_tokens[r, j]) for _, data, r, j in having])
        heads.append(fit_head(design, correct, config.reg_head))
        lengths.append(fit_head(design, written, config.reg_length, squared))
    generic = fit_generic([(d, _skills(s.data, r), s.data.correct[r][:, _rated(s.data)])
                           for s, d, r in zip(sets, designs, rows, strict=True) if len(_rated(s.data))],
                          config.reg_generic)
    columns = [*heads, generic.a, generic.b, *lengths]
    m = len(models)
    return RouterModel(
        vocab, np.stack([c.w for c in columns], axis=1).astype(np.float32), np.ones(len(columns), np.float32),
        np.stack([c.v for c in columns], axis=1).reshape(DENSE, -1).astype(np.float32),
        np.array([c.b for c in columns], dtype=np.float32),
        {alias: j for j, name in enumerate(models) for alias in _aliases(name)}, (m, m + 1),
        {alias: m + 2 + j for j, name in enumerate(models) for alias in _aliases(name)},
        generic.alpha, generic.beta, margins, meta or {})


def _stack(designs: Sequence[Design]) -> Design:
    return Design(sparse.vstack([d.x for d in designs]).tocsr(), np.vstack([d.d for d in designs]))


def _rated(data: OutcomeSet) -> list[int]:
    """The columns of the models with an arena rating (the generic head learns from those)."""
    return [j for j, m in enumerate(data.models) if rating_for(m, "overall") is not None]


def _skills(data: OutcomeSet, rows: np.ndarray) -> np.ndarray:
    return np.array([[skill(((rating_for(data.models[j], data.categories[i]) or 0.0) - 1000.0) / 5.0)
                      for j in _rated(data)] for i in rows])


def _hits(sets: Sequence[_Set], held_out: Sequence[Predictions], seed: int) -> list[np.ndarray]:
    """Per file, (len(_TARGETS), n): whether the controller's pick at each target was right, on
    held-out predictions (prompts in the order `report` replays them)."""
    found = []
    for s, pred in zip(sets, held_out, strict=True):
        correct = s.data.correct
        order = np.random.default_rng(seed).permutation(len(correct))
        rows = np.arange(len(correct))
        found.append(np.array([correct[rows, replay(pred, s.data.reference, float(t), order)] for t in _TARGETS]))
    return found


def _needed(sets: Sequence[_Set], hits: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> list[float]:
    """Per floor, the margin the controller's target needs for the quality reached over the prompts
    `masks[i]` of the files `sets[i]` (pooled: correct answers over the reference's) to be the floor."""
    got = sum(h[:, m].sum(axis=1) for h, m in zip(hits, masks, strict=True))
    ref = sum(float(s.data.correct[m, s.data.reference].sum()) for s, m in zip(sets, masks, strict=True))
    reached = np.maximum.accumulate(got / max(ref, 1.0))  # the least target that reaches a floor
    needed = []
    for floor in CALIBRATED_FLOORS:
        hit = np.flatnonzero(reached >= floor)
        needed.append(float((_TARGETS[hit[0]] if len(hit) else _TARGETS[-1]) - floor))
    return needed


def _clip(margin: float) -> float:
    return float(np.clip(margin, -MAX_MARGIN, MAX_MARGIN))


def _calibrate(sets: Sequence[_Set], hits: Sequence[np.ndarray], masks: Sequence[np.ndarray]
               ) -> tuple[tuple[tuple[float, float], ...], dict[int, tuple[tuple[float, float], ...]]]:
    """The calibration on the prompts `masks` of each file: per floor, the mean over files of the
    margin each needs, over all files (the fallback table) and over the files offering each number
    of candidates (a table per count)."""
    each = [_needed([s], [h], [m]) for s, h, m in zip(sets, hits, masks, strict=True)]

    def table(files: Sequence[int]) -> tuple[tuple[float, float], ...]:
        return tuple((floor, _clip(float(np.mean([each[i][k] for i in files]))))
                     for k, floor in enumerate(CALIBRATED_FLOORS))

    counts = sorted({len(s.data.models) for s in sets})
    by_count = {c: table([i for i, s in enumerate(sets) if len(s.data.models) == c]) for c in counts}
    return table(range(len(sets))), by_count


def train(sets: Sequence[OutcomeSet], tokens: TokenCounter, config: TrainingConfig,
          say: Callable[[str], None] = lambda _: None, keep: Path | None = None) -> tuple[RouterModel, dict[str, Any]]:
    """The model (fitted on all rows, calibrated on held-out folds) and the held-out report.
    `keep`: where to write the held-out predictions, for analysis."""
    encoding = tokens.encoding("o200k_base")
    prepared = []
    for data in sets:
        keys = [prompt_keys(encoding.encode(p[:MAX_CHARS], disallowed_special=())) for p in data.prompts]
        folds = np.random.default_rng(config.seed).permutation(len(keys)) % config.folds
        prepared.append(_Set(data, keys, folds))
    held_out = [np.zeros(s.data.correct.shape) for s in prepared]
    estimated = [np.zeros(s.data.correct.shape) for s in prepared]
    sure = [np.zeros(len(s.keys), dtype=bool) for s in prepared]
    started = time.monotonic()
    for fold in range(config.folds):
        model = _fit(prepared, [np.flatnonzero(s.folds != fold) for s in prepared], config)
        for k, s in enumerate(prepared):
            rows = np.flatnonzero(s.folds == fold)
            pred = predict(model, s.data.subset(rows), tokens)
            held_out[k][rows], estimated[k][rows], sure[k][rows] = pred.p, pred.estimated, pred.sure
        say(f"fold {fold + 1}/{config.folds} fitted ({time.monotonic() - started:.0f} s)")
    if keep is not None:
        arrays: dict[str, Any] = {f"{k}_{name}": a for k, s in enumerate(prepared) for name, a in
                                  (("p", held_out[k]), ("estimated", estimated[k]), ("sure", sure[k]),
                                   ("correct", s.data.correct), ("costs", s.data.costs()))}
        np.savez_compressed(keep, **arrays)
    preds = [Predictions(p, e, ok) for p, e, ok in zip(held_out, estimated, sure, strict=True)]
    hits = _hits(prepared, preds, config.seed)
    margins, by_count = _calibrate(prepared, hits, [np.ones(len(s.keys), dtype=bool) for s in prepared])
    # cross-fitted: a fold's prompts are decided with the calibration of the other folds' prompts
    fold_tables = [_calibrate(prepared, hits, [s.folds != fold for s in prepared])[1] for fold in range(config.folds)]
    cv = {"datasets": [report(s.data, pred, _target(by_count, len(s.data.models)), config.seed, folds=s.folds,
                              fold_targets=[_target(t, len(s.data.models)) for t in fold_tables])
                       for s, pred in zip(prepared, preds, strict=True)]}
    meta = {"trained_on": [{"file": Path(d.file).name, "sha256": hashlib.sha256(Path(d.file).read_bytes()).hexdigest(),
                            "rows": len(d.prompts), "models": list(d.models)} for d in sets],
            "config": config.__dict__, "held_out": _summary(cv)}
    model = replace(_fit(prepared, [np.arange(len(s.keys)) for s in prepared], config, margins, meta),
                    margins_by_count=by_count)
    say(f"final model fitted ({time.monotonic() - started:.0f} s)")
    return model, cv


def _target(by_count: dict[int, tuple[tuple[float, float], ...]], candidates: int) -> Callable[[float], float]:
    return lambda floor: floor + margin_for_candidates(by_count, floor, candidates)


def _summary(cv: dict[str, Any]) -> list[dict[str, Any]]:
    keep = ("learned", "static", "random", "oracle", "floor", "floor_reached")
    return [{"file": Path(d["file"]).name, "n": d["n"], **{k: d[k] for k in keep}} for d in cv["datasets"]]
