"""What the learned router reads of a prompt: the same features at training and when routing.

- The prompt's token ids (o200k_base, the last user message, at most `MAX_TOKENS` of them) as a
  set of keys: each id (a unigram) and each pair of neighbouring ids (a bigram, `(a + 1) << 18 |
  b`, exact: o200k ids are below 2**18). A prompt's keys count 1/sqrt(number of keys) each, so
  long and short prompts weigh the same.
- Dense features: the prompt's length (log of its input tokens), its category (one-hot) and
  how much arithmetic it carries (the numbers in its text: how many, how many distinct, their
  digits, decimals, percentages, money, fractions), which tells how many steps a word problem
  takes, and so which models get it right.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from routing_policies.base import PROMPT_CHARS

__all__ = ["CATEGORIES", "DENSE", "MAX_CHARS", "MAX_TOKENS", "dense_features", "prompt_keys"]

MAX_CHARS = PROMPT_CHARS  # of the last user message's text that is read
MAX_TOKENS = 2048
# The gateway's request categories (`gateway/routing/categories.py`), in a fixed order.
CATEGORIES = ("overall", "coding", "math", "creative_writing", "instruction_following", "hard_prompts", "multiturn",
              "long")
_NUMBER = re.compile(r"(?<![\w.])\$?\d[\d,]*(?:\.\d+)?%?")
_FRACTION = re.compile(r"\d\s*/\s*\d")
ARITHMETIC = 8  # features of the numbers in the text
DENSE = 1 + len(CATEGORIES) + ARITHMETIC  # log length, the category, the arithmetic
_BIGRAM_SHIFT = 18


def prompt_keys(token_ids: Sequence[int] | np.ndarray) -> np.ndarray:
    """The prompt's feature keys (sorted, unique int64)."""
    ids = np.asarray(token_ids, dtype=np.int64)[:MAX_TOKENS]
    if len(ids) < 2:
        return np.unique(ids)
    pairs = ((ids[:-1] + 1) << _BIGRAM_SHIFT) | ids[1:]
    return np.unique(np.concatenate((ids, pairs)))


def dense_features(input_tokens: int, category: str, text: str) -> np.ndarray:
    """`text`: the last user message (its first `MAX_CHARS` characters)."""
    row = np.zeros(DENSE)
    row[0] = np.log(max(input_tokens, 1)) / 5.0 - 1.0
    if category in CATEGORIES:
        row[1 + CATEGORIES.index(category)] = 1.0
    numbers = _NUMBER.findall(text, 0, MAX_CHARS)
    if numbers:
        digits = [sum(c.isdigit() for c in n) for n in numbers]
        row[1 + len(CATEGORIES):] = (
            np.log1p(len(numbers)) / 3, np.log1p(len(set(numbers))) / 3, np.log1p(sum(digits)) / 4,
            np.log1p(max(digits)) / 2, np.log1p(sum("." in n for n in numbers)) / 2,
            any(n.endswith("%") for n in numbers), any(n.startswith("$") for n in numbers),
            _FRACTION.search(text, 0, MAX_CHARS) is not None)
    return row
