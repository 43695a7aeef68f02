"""How many tokens a model is expected to write for one request: the estimate routing prices.

An answer's length depends first on the request, then on the model. So the expectation is the
request's *shape* (short factual question, general request, long-form, structured output) and
its base length, times the model's *verbosity* (how much more or less than other models it
writes for the same shapes), plus, for a reasoning model, its expected *reasoning* tokens for
the request's `reasoning_effort`.

Every answer, by name or by tier, teaches two things: the shape's base (shared by all models,
so a model that has not been seen is assumed to write what the others write) and the model's
verbosity relative to it. A model whose traffic happens to get short answers therefore lowers
its shape's base for every model, not its own price: it cannot capture a tier by being
observed. Values are learned robustly, in log space: each answer moves an estimate by at most
a step (a runaway answer cannot dominate), early answers count more than late ones, and a
model's verbosity stays within 2x of its family's prior. `max_tokens` bounds the expectation
(budget holds keep the worst case).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

__all__ = [
    "REASONING_PRIOR", "SHAPE_BASE", "Observation", "default_effort", "effort_of", "expected_tokens", "learn",
    "prior_verbosity", "request_shape",
]

# Base output tokens by shape ("general" is routing.default_output_tokens).
SHAPE_BASE = MappingProxyType({"short": 64, "structured": 160, "long": 700})
# Expected reasoning tokens by reasoning_effort, before a model's own are measured.
REASONING_PRIOR = MappingProxyType({"minimal": 0, "none": 0, "low": 600, "medium": 2000, "high": 6000})
_DEFAULT_EFFORT = "medium"
_SHORT_CHARS = 200  # characters of text at or under which a request without long-form cues is "short"
_LONG_CUES = re.compile(
    r"\b(write|essay|story|article|poem|explain|describe|detail|implement|code|program|function|script|"
    r"draft|report|summari[sz]e|translate|list all|step by step|plan)\b", re.IGNORECASE)
# Verbosity priors by model family (multipliers on the shape's base); others 1.0.
_FAMILY_VERBOSITY = (("claude", 1.2), ("gemini", 1.3), ("gpt-5", 1.2), ("deepseek", 1.1), ("mistral", 0.9),
                     ("llama", 0.9), ("grok", 1.2))
_STRUCTURED = frozenset({"tools", "json_schema"})
_VERBOSITY_SPAN = math.log(2.0)  # learned verbosity stays within 2x of the family prior
_STEP = 0.1  # the smallest weight of a new observation (log space)
_CLIP = 1.0  # an observation moves the estimate by at most this (log space), times its weight


class Observation(NamedTuple):
    """What one answer teaches: its visible output against the request's base, and its
    reasoning tokens (reasoning models only) under the request's effort."""

    shape: str  # the request's
    log_ratio: float  # log(output tokens / the shape's prior base)
    prior_verbosity: float  # the model family's (log), where learning starts
    effort: str | None  # reasoning_effort asked for (None: not a reasoning model)
    log_reasoning: float = 0.0  # log(1 + reasoning tokens)
    prior_reasoning: float = 0.0  # log(1 + the effort's prior reasoning tokens)


def prior_verbosity(upstream_model: str) -> float:
    name = upstream_model.lower()
    return math.log(next((m for family, m in _FAMILY_VERBOSITY if family in name), 1.0))


def request_shape(messages: list[Any], needs: frozenset[str], body: Mapping[str, Any]) -> str:
    """short | general | long | structured, from what the request parser has read (validated
    messages): structured output asked for; a long-form cue in the last message; at most
    about 50 tokens of text; else general."""
    fmt = body.get("response_format")
    if needs & _STRUCTURED or (fmt is not None and fmt.get("type") == "json_object"):
        return "structured"
    last = messages[-1].get("content")
    text = last if last.__class__ is str else " ".join(
        p.get("text") or "" for p in last or () if p.get("type") == "text")
    if _LONG_CUES.search(text, 0, 400):
        return "long"
    chars = 0
    for message in messages:
        content = message.get("content")
        chars += len(content) if content.__class__ is str else _SHORT_CHARS + 1
        if chars > _SHORT_CHARS:
            return "general"
    return "short"


def default_effort(upstream_model: str, wire: str) -> str:
    """The effort a reasoning model uses when the request names none: Anthropic models think
    only when asked, GPT-5.1 defaults to none, the others (o-series, GPT-5, Gemini 2.5,
    DeepSeek's reasoner) to a medium effort."""
    if wire == "anthropic" or upstream_model.lower().rsplit("/", 1)[-1].startswith("gpt-5.1"):
        return "none"
    return _DEFAULT_EFFORT


def effort_of(body: Mapping[str, Any]) -> str | None:
    """The request's own reasoning_effort, if it names a known one."""
    effort = body.get("reasoning_effort")
    return effort if effort.__class__ is str and effort in REASONING_PRIOR else None


def expected_tokens(base: float, log_verbosity: float, prior: float, reasoning: float | None,
                    max_tokens: int | None, n: int) -> tuple[int, int]:
    """(visible output, reasoning) tokens expected for all `n` choices: the shape's learned
    `base` times the verbosity (within its span around the family `prior`), plus the learned
    reasoning (`reasoning`, log(1 + tokens); None for a model that does not reason); `max_tokens`
    bounds each choice's total, reasoning first."""
    low, high = prior - _VERBOSITY_SPAN, prior + _VERBOSITY_SPAN
    output = max(round(base * math.exp(min(max(log_verbosity, low), high))), 1)
    thinking = round(math.expm1(reasoning)) if reasoning is not None else 0
    if max_tokens is not None and output + thinking > max_tokens:
        thinking = min(thinking, max_tokens)
        output = min(output, max_tokens - thinking)
    return output * n, thinking * n


def learn(value: float | None, count: int, observed: float, prior: float) -> tuple[float, int]:
    """One robust step (log space) of an estimate that has seen `count` observations: weight
    1/(count + 1), at least `_STEP`, of the observation's difference, clipped to +-`_CLIP`."""
    current = prior if value is None else value
    weight = max(1.0 / (count + 1), _STEP)
    return current + weight * min(max(observed - current, -_CLIP), _CLIP), count + 1
