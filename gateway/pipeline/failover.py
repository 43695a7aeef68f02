"""Trying a tier's candidates in turn: on 429, 5xx, timeout or a connection error before any
byte reached the client, the next candidate gets the request, within a bounded number of
attempts and an overall deadline. The deadline is handed to each attempt, whose upstream call
gives up at the earlier of the deadline and the model's own timeout (one timer per call, not
two). A 429's `retry-after` cools that model for that long; a model failing
`failure_threshold` times in a row cools down for `cooldown_s` (shared across processes when
routing state is in Redis). Only the model's own failures count: not the caller's key limit,
not a deadline spent before the call, not a call the deadline cut short after less than half
the time a first attempt gets.

The pipeline makes each attempt; `Failover.next` judges the one that failed and names the
candidate to try next.
"""

from __future__ import annotations

import asyncio
from time import perf_counter
from typing import Any

from gateway.config.schema import RoutingConfig
from gateway.errors import (
    DeadlineExceeded,
    GatewayError,
    RateLimited,
    RateLimitExceeded,
    UpstreamError,
    UpstreamTimeout,
)
from gateway.pipeline.exchange import Exchange
from gateway.pipeline.settle import Books
from gateway.routing.router import RoutePlan
from gateway.routing.state import RoutingState
from routing_policies import Candidate

__all__ = ["Failover"]

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


class Failover:
    """A routed request after its first attempt failed: `deadline` is event-loop time."""

    def __init__(self, plan: RoutePlan, deadline: float, routing: RoutingConfig, state: RoutingState,
                 books: Books) -> None:
        self.deadline = deadline
        self._plan = plan
        self._routing = routing
        self._state = state
        self._books = books
        self._tries = min(plan.size, routing.max_attempts)
        self._tried = 1
        self._spent = f"routing deadline of {routing.deadline_s:g}s exceeded in tier '{plan.tier.name}'"

    def _blame(self, exchange: Exchange[Any], exc: GatewayError) -> GatewayError:
        """The failure as the model's own, or as the deadline's (which blames no model)."""
        attempt = exchange.attempt
        assert attempt is not None
        name = attempt.spec.name
        if isinstance(exc, DeadlineExceeded):
            return DeadlineExceeded(f"{self._spent} before '{name}' was called")
        if isinstance(exc, UpstreamTimeout) and asyncio.get_running_loop().time() >= self.deadline - _SLACK:
            # The deadline, not the model's own timeout, ended the call: the model is to blame
            # only if it had at least half the time a first attempt gets.
            fair = perf_counter() - attempt.started >= min(attempt.spec.timeout_s, self._routing.deadline_s) / 2
            return (UpstreamTimeout if fair else DeadlineExceeded)(f"{self._spent} (last tried '{name}')")
        return exc

    async def next(self, exchange: Exchange[Any], exc: GatewayError) -> Candidate:
        """The candidate to try after the latest attempt failed with `exc`; raises the failure
        when it is not worth retrying, or when attempts or time have run out."""
        exc = self._blame(exchange, exc)
        if not _retryable(exc):
            raise exc
        attempt = exchange.attempt
        assert attempt is not None
        wait = _retry_after(exc)
        if wait is not None:
            await self._state.cool(attempt.spec.name, wait)
        await self._state.failed(attempt.spec.name)
        if self._tried >= self._tries or asyncio.get_running_loop().time() >= self.deadline - _SLACK:
            raise exc
        self._books.failed_over(exchange, exc)
        exchange.failures += (f"{attempt.spec.name} ({exc.kind or exc.code})",)
        self._tried += 1
        return self._plan.ranked[self._tried - 1]  # the others are built only now
