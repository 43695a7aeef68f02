"""Trying a tier's candidates in turn: on 429, 5xx, timeout or a connection error before any
byte reached the client, the next candidate gets the request, within a bounded number of
attempts and an overall deadline. A 429's `retry-after` cools that model for that long; a
model failing `failure_threshold` times in a row cools down for `cooldown_s` (shared across
processes when routing state is in Redis).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from gateway.call import Call
from gateway.errors import GatewayError, RateLimited, UpstreamError, UpstreamTimeout
from gateway.routing import RoutePlan
from gateway.settings import ModelSpec

__all__ = ["run_with_failover"]

T = TypeVar("T")
Attempt = Callable[[ModelSpec], Awaitable[T]]


def _retryable(exc: GatewayError) -> bool:
    return isinstance(exc, RateLimited | UpstreamError | UpstreamTimeout)


def _retry_after(exc: GatewayError) -> float | None:
    value = exc.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


async def run_with_failover(call: Call, plan: RoutePlan, attempt: Attempt[T]) -> T:
    routing = call.state.settings.routing
    router, metrics = call.state.router, call.state.metrics
    deadline = time.monotonic() + routing.deadline_s
    tries = plan.ranked[: routing.max_attempts]
    call.plan = plan
    for i, candidate in enumerate(tries):
        call.spec = spec = call.state.settings.models[candidate.model]
        try:
            async with asyncio.timeout(max(deadline - time.monotonic(), 0.001)):
                return await attempt(spec)
        except TimeoutError:
            exc: GatewayError = UpstreamTimeout(f"routing deadline of {routing.deadline_s:g}s exceeded in tier "
                                                f"'{plan.tier.name}' (last tried '{spec.name}')")
        except GatewayError as err:
            exc = err
        if not _retryable(exc):
            raise exc
        wait = _retry_after(exc)
        if wait is not None:
            await router.state.cool(spec.name, wait)
        await router.state.failed(spec.name)
        if i == len(tries) - 1 or time.monotonic() >= deadline:
            raise exc
        call.upstream_failed(exc)
        metrics.child(metrics.failovers, plan.tier.name).inc()
        plan.failovers.append(f"{spec.name} ({exc.kind or exc.code})")
    raise AssertionError("unreachable: the last attempt returns or raises")
