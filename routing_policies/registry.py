"""Find a policy by name: a built-in (`cheapest`, `ordered`, `fastest`, `learned`), or any
importable module that defines `POLICY` (an object with `name` and `rank`), e.g.
`policy: my_company.routing.greenest`. A module that defines `create(options)` instead (or too)
gets an instance of its own per tier, made from the tier's `PolicyOptions`."""

from __future__ import annotations

import importlib
from types import MappingProxyType

from routing_policies.base import PolicyOptions, RoutingPolicy

__all__ = ["BUILTIN", "load_policy"]

BUILTIN = MappingProxyType({name: f"routing_policies.{name}" for name in ("cheapest", "ordered", "fastest", "learned")})


def load_policy(name: str, options: PolicyOptions | None = None) -> RoutingPolicy:
    """Raises ValueError with a readable reason if `name` is not a usable policy (or `options`
    do not suit it)."""
    module_name = BUILTIN.get(name, name)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"unknown routing policy '{name}' (built-ins: {', '.join(BUILTIN)}): {exc}") from None
    create = getattr(module, "create", None)
    if callable(create):
        policy = create(options or PolicyOptions(tier=""))
    else:
        if options is not None and (options.quality_floor is not None or options.router_model is not None):
            raise ValueError(f"policy '{name}' takes no quality_floor or router_model (the learned policy does)")
        policy = getattr(module, "POLICY", None)
    if policy is None or not callable(getattr(policy, "rank", None)):
        raise ValueError(f"module '{module_name}' has no POLICY with a rank() method")
    return policy  # type: ignore[no-any-return]
