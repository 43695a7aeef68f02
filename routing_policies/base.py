"""The policy interface: one method, `rank`.

A policy that reads the prompt itself (the learned `auto` policy) says so with
`reads_prompt = True`; it is then called as `rank(candidates, tier, prompt)` with a `Prompt`.
A policy whose module defines `create(options)` gets an instance of its own per tier (for state
such as the learned policy's recent decisions); else the module's `POLICY` serves every tier."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["PROMPT_CHARS", "Candidate", "PolicyOptions", "Prompt", "PromptPolicy", "RoutingPolicy", "TierRoute"]

PROMPT_CHARS = 8192  # of the last user message that a prompt-reading policy gets


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
    note: str = ""  # what the policy says about its choice (x-gateway-route), e.g. a predicted quality


@dataclass(frozen=True, slots=True)
class TierRoute:
    """What a policy may read about the tier it ranks for."""

    name: str
    min_quality: float
    order: tuple[str, ...] = field(default=())  # preference list, for `ordered`
    reference: str | None = None  # the tier's baseline_model; None: the best-quality candidate


@dataclass(frozen=True, slots=True)
class Prompt:
    """What a prompt-reading policy may read about the request (built only for such policies)."""

    text: str  # the last user message's text (its first PROMPT_CHARS characters)
    token_ids: Sequence[int]  # its o200k_base token ids
    input_tokens: int  # the whole prompt's tokens
    category: str  # overall | coding | math | ... (`gateway/routing/categories.py`)
    routed: bool = True  # False for an estimate or `gateway route`: the request is not sent


@dataclass(frozen=True, slots=True)
class PolicyOptions:
    """A tier's settings for a policy that makes one instance per tier (`create`)."""

    tier: str
    quality_floor: float | None = None  # share of the reference model's quality to keep (learned policy)
    router_model: str | None = None  # a router file of `gateway router train` (default: the shipped one)


class RoutingPolicy(Protocol):
    name: str

    def rank(self, candidates: Sequence[Candidate], tier: TierRoute) -> list[Candidate]:
        """All candidates, best first. Must not drop or invent any. They arrive sorted by quality,
        highest first, then by name, so a stable sort keeps that order among ties."""
        ...


class PromptPolicy(Protocol):
    """A policy that reads the prompt (`reads_prompt = True`)."""

    name: str
    reads_prompt: bool

    def rank(self, candidates: Sequence[Candidate], tier: TierRoute, prompt: Prompt | None = None
             ) -> list[Candidate]:
        """As `RoutingPolicy.rank`, with what the request's prompt says."""
        ...
