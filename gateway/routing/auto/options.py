"""What `gateway router train` can be told (no scipy here: the CLI reads the defaults at start-up)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TrainingConfig"]


@dataclass(frozen=True)
class TrainingConfig:
    folds: int = 5
    min_count: int = 2  # a feature key must be in this many training prompts
    reg_head: float = 3.0  # L2 strength of a model's own head
    reg_generic: float = 1.0  # of the generic head
    reg_length: float = 3.0  # of the length heads
    seed: int = 0
