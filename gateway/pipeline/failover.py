"""Trying a tier's candidates in turn: on 429, 5xx, timeout or a connection error before any
byte reached the client, the next candidate gets the request, within a bounded number of
attempts and an overall deadline. The deadline is handed to each attempt, whose upstream call
gives up at the earlier of the deadline and the model's own timeout (one timer per call, not
two). A 429's `retry-after` cools that model for that long; a model failing
`failure_threshold` times in a row cools down for `cooldown_s` (shared across processes when
routing state is in Redis). Only the model's own failures count: not the caller's key limit,
not a deadline spent before the call, not a call the deadline cut short after less than half
the time a first attempt gets.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from time import perf_counter
from typing import TypeVar

from gateway.config.settings import ModelSpec
from gateway.errors import (
    DeadlineExceeded,
    GatewayError,
    RateLimited,
    RateLimitExceeded,
    UpstreamError,
    UpstreamTimeout,
)
from gateway.pipeline.exchange import Call
from gateway.routing.router import RoutePlan

__all__ = ["fail_over", "first_attempt"]

T = TypeVar("T")
Attempt = Callable[[ModelSpec, float], Awaitable[T]]  # (model, deadline in event-loop time)
_SLACK = 0.005  # a timer may fire this early (libuv keeps time in whole milliseconds)


def _retryable(exc: GatewayError) -> bool:
    """An upstream failure. Neither the caller's own key limit nor a deadline that passed before
    the call is one: they neither fail over nor count against (or cool) the model for everyone."""
    return isinstance(exc, RateLimited | UpstreamError | UpstreamTimeout) and not isinstance(
        exc, RateLimitExceeded | DeadlineExceeded)


def _retry_after(exc: GatewayError) -> float | None:
    value = exc.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def first_attempt(call: Call, plan: RoutePlan) -> tuple[ModelSpec, float]:
    """Start a routed request: the model to try first and the overall deadline (event-loop time).
    The caller makes that attempt itself and hands any GatewayError to `fail_over`, so the
    common request (the first candidate answers) has no extra coroutine in between."""
    call.plan = plan
    call.spec = spec = call.state.settings.models[plan.first.model]
    return spec, asyncio.get_running_loop().time() + call.state.settings.routing.deadline_s


async def fail_over(call: Call, plan: RoutePlan, attempt: Attempt[T], exc: GatewayError, deadline: float) -> T:
    """The first attempt failed with `exc`: account for it and try the next candidates while
    attempts and time remain; raise the last failure (or one that is not worth retrying)."""
    routing = call.state.settings.routing
    router, metrics, models = call.state.router, call.state.metrics, call.state.settings.models
    loop = asyncio.get_running_loop()
    tries = min(plan.size, routing.max_attempts)
    spent = f"routing deadline of {routing.deadline_s:g}s exceeded in tier '{plan.tier.name}'"
    i = 0
    while True:
        spec = call.spec
        assert spec is not None
        if isinstance(exc, DeadlineExceeded):
            exc = DeadlineExceeded(f"{spent} before '{spec.name}' was called")
        elif isinstance(exc, UpstreamTimeout) and loop.time() >= deadline - _SLACK:
            # The deadline, not the model's own timeout, ended the call: the model is to blame
            # only if it had at least half the time a first attempt gets.
            fair = perf_counter() - call.upstream_started >= min(spec.timeout_s, routing.deadline_s) / 2
            exc = (UpstreamTimeout if fair else DeadlineExceeded)(f"{spent} (last tried '{spec.name}')")
        if not _retryable(exc):
            raise exc
        wait = _retry_after(exc)
        if wait is not None:
            await router.state.cool(spec.name, wait)
        await router.state.failed(spec.name)
        if i == tries - 1 or loop.time() >= deadline - _SLACK:
            raise exc
        call.upstream_failed(exc)
        metrics.child(metrics.failovers, plan.tier.name).inc()
        plan.failovers.append(f"{spec.name} ({exc.kind or exc.code})")
        i += 1
        call.spec = spec = models[plan.ranked[i].model]  # the others are built only now
        try:
            return await attempt(spec, deadline)
        except GatewayError as err:
            exc = err
