"""The policy interface: one method, `rank`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["Candidate", "RoutingPolicy", "TierRoute"]


@dataclass(slots=True)
class Candidate:
    """A model that qualifies for the request, with what the gateway expects it to cost.

    Treat it as read-only. (Not `frozen`: a frozen dataclass costs ~1.4 us more to build, and
    routing builds one per candidate per request.)"""

    model: str
    quality: float
    estimated_cost_pico: int  # from the pricing core: input tokens and expected output tokens
    input_tokens: int
    expected_output_tokens: int
    latency_s: float | None = None  # recent average duration in this process; None if unseen
    cached_tokens: int = 0  # prompt tokens expected to be read from the provider's prompt cache
    cache_write_tokens: int = 0  # prompt tokens the gateway expects to write to it (Anthropic breakpoint)
    expected_reasoning_tokens: int = 0  # a reasoning model's expected reasoning tokens (priced in the estimate)


@dataclass(frozen=True, slots=True)
class TierRoute:
    """What a policy may read about the tier it ranks for."""

    name: str
    min_quality: float
    order: tuple[str, ...] = field(default=())  # preference list, for `ordered`


class RoutingPolicy(Protocol):
    name: str

    def rank(self, candidates: Sequence[Candidate], tier: TierRoute) -> list[Candidate]:
        """All candidates, best first. Must not drop or invent any. They arrive sorted by quality,
        highest first, then by name, so a stable sort keeps that order among ties."""
        ...
