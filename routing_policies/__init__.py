"""Pluggable routing policies: given the candidates that qualify for a tier (already filtered
for quality, context window, capabilities, availability and cooldown), put them in the order
the gateway should try them. See `base.RoutingPolicy`; built-ins: cheapest, ordered, fastest."""

from routing_policies.base import Candidate, RoutingPolicy, TierRoute
from routing_policies.registry import load_policy

__all__ = ["Candidate", "RoutingPolicy", "TierRoute", "load_policy"]
