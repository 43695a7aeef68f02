"""Pluggable routing policies: given the candidates that qualify for a tier (already filtered
for quality, context window, capabilities, availability and cooldown), put them in the order
the gateway should try them. See `base.RoutingPolicy`; built-ins: cheapest, ordered, fastest, and
learned (`learned/`: the auto tier's, which reads the prompt)."""

from routing_policies.base import (
    PROMPT_CHARS,
    Candidate,
    PolicyOptions,
    Prompt,
    PromptPolicy,
    RoutingPolicy,
    TierRoute,
)
from routing_policies.registry import load_policy

__all__ = ["PROMPT_CHARS", "Candidate", "PolicyOptions", "Prompt", "PromptPolicy", "RoutingPolicy", "TierRoute",
           "load_policy"]
