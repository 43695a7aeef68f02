"""Find a policy by name: a built-in (`cheapest`, `ordered`, `fastest`), or any importable module
that defines `POLICY` (an object with `name` and `rank`), e.g. `policy: my_company.routing.greenest`."""

from __future__ import annotations

import importlib
from types import MappingProxyType

from routing_policies.base import RoutingPolicy

__all__ = ["BUILTIN", "load_policy"]

BUILTIN = MappingProxyType({name: f"routing_policies.{name}" for name in ("cheapest", "ordered", "fastest")})


def load_policy(name: str) -> RoutingPolicy:
    """Raises ValueError with a readable reason if `name` is not a usable policy."""
    module_name = BUILTIN.get(name, name)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"unknown routing policy '{name}' (built-ins: {', '.join(BUILTIN)}): {exc}") from None
    policy = getattr(module, "POLICY", None)
    if policy is None or not callable(getattr(policy, "rank", None)):
        raise ValueError(f"module '{module_name}' has no POLICY with a rank() method")
    return policy  # type: ignore[no-any-return]
