"""Per-prompt outcome files (the format of `shared/data/routing/`): for each prompt, whether
each model answered correctly and how many tokens its answer took.

Two layouts are read: a *pair* (`q_strong`, `q_weak`, `out_tok_strong`, `out_tok_weak`: RouteLLM's
GPT-4-1106 and Mixtral-8x7B unless told otherwise) and *many models* (`c_<model>`, `out_<model>`).
Each model gets a price (the pricing core's, from litellm's table or the list prices the data's
README gives) and an arena rating (LMArena, 2025-12-11, overall and by category: what the
generic head reads for a model the router has no head of).
"""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType

import numpy as np

from gateway.money.price_table import PriceTable
from gateway.money.pricing import Price, Rates, estimate_cost, per_mtok_to_pico
from gateway.routing.categories import detect_category
from routing_policies.learned.model import canonical

__all__ = ["DATA_MODELS", "DataModel", "OutcomeSet", "load_outcomes", "rating_for", "read_prompts"]

_SOURCE = "LMArena text, 2025-12-11 (shared/data/quality/lmarena_text_categories_2025-12-11.csv)"


@dataclass(frozen=True)
class DataModel:
    name: str  # canonical: LMArena's id
    aliases: tuple[str, ...]  # as data files name it
    price_key: str | None  # litellm's table (provider/model), or None: `list_price`
    list_price: tuple[str, str] | None  # USD per million tokens (input, output), when not in the table
    ratings: Mapping[str, float]  # arena rating overall and by the gateway's categories


def _model(name: str, aliases: tuple[str, ...], key: str | None, ratings: dict[str, float],
           list_price: tuple[str, str] | None = None) -> DataModel:
    return DataModel(name, aliases, key, list_price, MappingProxyType(ratings))


DATA_MODELS = MappingProxyType({m.name: m for m in (
    _model("gpt-4-1106-preview", ("strong",), "gpt-4-1106-preview", {
        "overall": 1264.1, "coding": 1253.6, "math": 1272.7, "creative_writing": 1245.3,
        "instruction_following": 1239, "hard_prompts": 1240.2, "multiturn": 1256.3, "long": 1236.2}),
    _model("mixtral-8x7b-instruct-v0.1", ("weak", "mixtral-8x7b-instruct"),
           "together_ai/mistralai/Mixtral-8x7B-Instruct-v0.1", {
               "overall": 1132.9, "coding": 1125.9, "math": 1150.8, "creative_writing": 1110.5,
               "instruction_following": 1108, "hard_prompts": 1113.8, "multiturn": 1115, "long": 1104.4}),
    _model("gpt-4o-2024-05-13", (), "gpt-4o-2024-05-13", {
        "overall": 1301.1, "coding": 1296.4, "math": 1287.9, "creative_writing": 1292.4,
        "instruction_following": 1276.3, "hard_prompts": 1279.8, "multiturn": 1300.9, "long": 1289.2}),
    _model("gemini-1.5-pro-002", (), None, {
        "overall": 1319.8, "coding": 1293.6, "math": 1318.3, "creative_writing": 1333.8,
        "instruction_following": 1295.6, "hard_prompts": 1295.5, "multiturn": 1295.9, "long": 1308.8},
        ("1.25", "5")),
    _model("gemini-1.5-flash-002", (), None, {
        "overall": 1287.6, "coding": 1260.7, "math": 1272.9, "creative_writing": 1286.4,
        "instruction_following": 1256.5, "hard_prompts": 1256, "multiturn": 1252.3, "long": 1284.7},
        ("0.075", "0.30")),
    _model("jamba-1.5-large", (), "jamba-1.5-large", {
        "overall": 1238.2, "coding": 1227, "math": 1225.3, "creative_writing": 1213.2,
        "instruction_following": 1211.5, "hard_prompts": 1217.2, "multiturn": 1220.4, "long": 1207.4}),
    _model("llama-3.1-70b-instruct", (), "together_ai/meta-llama/Meta-Llama-3.1-70B-Instruct-Turbo", {
        "overall": 1262, "coding": 1259.2, "math": 1254.7, "creative_writing": 1233.9,
        "instruction_following": 1230.3, "hard_prompts": 1240.2, "multiturn": 1256.1, "long": 1241.6}),
    _model("llama-3.1-8b-instruct", (), "together_ai/meta-llama/Meta-Llama-3.1-8B-Instruct-Turbo", {
        "overall": 1188.1, "coding": 1194.5, "math": 1183.1, "creative_writing": 1156.4,
        "instruction_following": 1158.5, "hard_prompts": 1174.1, "multiturn": 1171.6, "long": 1182.3}),
    _model("mistral-7b-instruct-v0.2", (), "fireworks_ai/accounts/fireworks/models/mistral-7b-instruct-v0p2", {
        "overall": 1091.3, "coding": 1081.3, "math": 1089.9, "creative_writing": 1070.5,
        "instruction_following": 1058.8, "hard_prompts": 1066.8, "multiturn": 1063.7, "long": 1060.7}),
)})
_BY_ALIAS = MappingProxyType({alias: m for m in DATA_MODELS.values() for alias in (m.name, *m.aliases)})
PAIR = ("gpt-4-1106-preview", "mixtral-8x7b-instruct-v0.1")  # RouteLLM's strong and weak models


def rating_for(model: str, category: str) -> float | None:
    """A data model's arena rating for a category (its overall rating if the category has none)."""
    known = _BY_ALIAS.get(canonical(model))
    if known is None:
        return None
    return known.ratings.get(category, known.ratings["overall"])


@dataclass(frozen=True)
class OutcomeSet:
    """One file's outcomes: rows are prompts, columns are models."""

    file: str
    prompts: list[str]
    input_tokens: np.ndarray  # (n,) as the file counts them
    categories: list[str]  # each prompt's, as the gateway detects it
    models: tuple[str, ...]  # canonical names
    correct: np.ndarray  # (n, m) 0/1
    output_tokens: np.ndarray  # (n, m)
    prices: tuple[Price, ...]

    @property
    def reference(self) -> int:
        """The model the others are measured against: the most accurate one (the dearer on a tie)."""
        accuracy = self.correct.mean(axis=0)
        return max(range(len(self.models)), key=lambda j: (accuracy[j], self.prices[j].base.output))

    def costs(self) -> np.ndarray:
        """(n, m) what each model's answer cost, pico-USD, priced by the pricing core."""
        return np.array([[estimate_cost(price, int(n), int(out)) for price, out in zip(self.prices, outs, strict=True)]
                         for n, outs in zip(self.input_tokens, self.output_tokens, strict=True)], dtype=np.int64)

    def subset(self, rows: np.ndarray) -> OutcomeSet:
        return OutcomeSet(self.file, [self.prompts[i] for i in rows], self.input_tokens[rows],
                          [self.categories[i] for i in rows], self.models, self.correct[rows],
                          self.output_tokens[rows], self.prices)


def _price(model: str, table: PriceTable, overrides: Mapping[str, tuple[str, str]]) -> Price:
    listed = overrides.get(model)
    known = _BY_ALIAS.get(model)
    if listed is None and known is not None:
        if known.price_key is not None:
            provider, _, rest = known.price_key.partition("/")
            found = table.price(provider, rest) if rest else table.price("", provider)
            if found is not None:
                return found
        listed = known.list_price
    if listed is None:
        found = table.price("", model)
        if found is not None:
            return found
        raise ValueError(f"no price for model '{model}': give --price {model}=IN,OUT (USD per million tokens)")
    inp, out = (per_mtok_to_pico(Decimal(v)) for v in listed)
    return Price(Rates(inp, inp, inp, inp, out, out))


def _read(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """A file's columns and rows (csv, or csv.gz)."""
    raw = path.read_bytes()
    text = gzip.decompress(raw).decode() if raw[:2] == b"\x1f\x8b" else raw.decode()
    reader = csv.DictReader(io.StringIO(text))
    rows = list(reader)
    return list(reader.fieldnames or []), rows


def read_prompts(path: Path) -> list[str]:
    columns, rows = _read(path)
    if "prompt" not in columns:
        raise ValueError(f"{path}: no prompt column")
    return [r["prompt"] for r in rows]


def load_outcomes(path: Path, table: PriceTable, pair: tuple[str, str] = PAIR,
                  prices: Mapping[str, tuple[str, str]] | None = None) -> OutcomeSet:
    """Read one file (csv, or csv.gz); raises ValueError naming what is wrong with it."""
    columns, rows = _read(path)
    if {"q_strong", "q_weak"} <= set(columns):
        names = {"strong": pair[0], "weak": pair[1]}
        correct_col, out_col = {n: f"q_{n}" for n in names}, {n: f"out_tok_{n}" for n in names}
    else:
        names = {c[2:]: c[2:] for c in columns if c.startswith("c_")}
        correct_col, out_col = {n: f"c_{n}" for n in names}, {n: f"out_{n}" for n in names}
    missing = [c for c in ("prompt", "in_tok", *correct_col.values(), *out_col.values()) if c not in columns]
    if len(names) < 2 or missing:
        raise ValueError(f"{path}: not a routing outcome file (need prompt, in_tok and, for each model, "
                         f"c_<model> and out_<model>, or q_/out_tok_ strong and weak); missing {missing or 'models'}")
    if not rows:
        raise ValueError(f"{path}: no rows")
    models = tuple(canonical(_BY_ALIAS[m].name if m in _BY_ALIAS else m) for m in map(canonical, names.values()))
    try:
        correct = np.array([[float(r[correct_col[n]]) for n in names] for r in rows])
        outputs = np.array([[int(float(r[out_col[n]])) for n in names] for r in rows], dtype=np.int64)
        inputs = np.array([int(float(r["in_tok"])) for r in rows], dtype=np.int64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: a value is not a number ({exc})") from None
    prompts = [r["prompt"] for r in rows]
    categories = [detect_category([{"role": "user", "content": p}]) for p in prompts]
    priced = tuple(_price(m, table, prices or {}) for m in models)
    return OutcomeSet(str(path), prompts, inputs, categories, models, correct, outputs, priced)
