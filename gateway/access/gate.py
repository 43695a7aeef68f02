"""Who is calling and what they may spend, per request: the virtual key (401 if unknown,
revoked or expired; 401 without one when `require_keys`), what it may use (403), its RPM/TPM
limits (429 `rate_limit_exceeded` with `retry-after`) and its budget and its team's (429
`budget_exceeded`, `x-should-retry: false`), all before any provider is called.

A budget hold reserves the request's worst case (`pricing.worst_case_cost`) for the model about
to be called; after the call it is settled at the actual cost, or released if the call failed
before producing anything billable. Settling runs as its own task, started before the answer
is sent and not waited for: the answer does not wait for a Redis round trip, and a client that
disconnects mid-stream cannot cancel it. Until it lands (about one round trip later) the
request's hold, its worst case, still counts against the budget, so this can only make a
budget briefly stricter, never looser.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from gateway.access.budgets import Budgets, Hold
from gateway.access.keys import SECRET_PREFIX, KeyStore, Team, VirtualKey, check_allowed
from gateway.access.ratelimit import Admission, RateLimiter
from gateway.config.schema import BudgetConfig
from gateway.config.settings import ModelSpec
from gateway.errors import AuthenticationFailed, BudgetExceeded, GatewayError, RateLimitExceeded
from gateway.ledger.spend_stats import SpendStats
from gateway.money.pricing import PICO_PER_USD, worst_case_cost
from gateway.observability.metrics import Metrics
from gateway.runtime.background import Background
from gateway.runtime.redis_errors import redis_errors
from gateway.runtime.redis_scripts import ScriptBatch

__all__ = ["Access", "Grant"]

log = logging.getLogger("gateway.access")


@dataclass
class Grant:
    """One request's access: its key and team (None when anonymous is allowed) and what it holds."""

    key: VirtualKey | None = None
    team: Team | None = None
    admission: Admission | None = None
    hold: Hold | None = None
    rate_tokens: int | None = None  # the rate-limit charge still to take (with the first hold)

    @property
    def team_label(self) -> str:
        return self.key.team or "" if self.key is not None else ""


@dataclass
class Access:
    keys: KeyStore
    budgets: Budgets
    limiter: RateLimiter
    stats: SpendStats
    metrics: Metrics
    config: BudgetConfig
    require_keys: bool
    background: Background = field(default_factory=Background)

    async def authenticate(self, authorization: str | None) -> Grant:
        scheme, _, secret = (authorization or "").partition(" ")
        secret = secret.strip() if scheme.lower() == "bearer" else ""
        if not secret.startswith(SECRET_PREFIX):
            if self.require_keys:
                raise AuthenticationFailed("A gateway key is required: send 'Authorization: Bearer sk-gw-...'.")
            return Grant()
        key = await self.keys.authenticate(secret)
        team = await self.keys.get_team(key.team) if key.team else None
        return Grant(key, team)

    def check(self, grant: Grant, model: str | None, tier: str | None) -> None:
        if grant.key is not None:
            check_allowed(grant.key, model, tier)

    def admit(self, grant: Grant, tokens: int) -> None:
        """Charge the request against its key's RPM/TPM, once per request: done together with
        the first attempt's budget hold (`reserve`), in parallel, to save a Redis round trip."""
        key = grant.key
        if key is not None and (key.rpm is not None or key.tpm is not None):
            grant.rate_tokens = tokens

    async def reserve(self, grant: Grant, spec: ModelSpec, input_tokens: int, max_tokens: int | None) -> None:
        """Hold the worst case of calling `spec` against the key's and the team's budgets (and
        take the pending rate-limit charge); raise 429 if either refuses, undoing the other."""
        tokens, grant.rate_tokens = grant.rate_tokens, None
        results = await self._hold_and_admit(grant, spec, input_tokens, max_tokens, tokens)
        hold, admission = results[0], results[1] if len(results) > 1 else None
        grant.hold = hold if isinstance(hold, Hold) else None
        if tokens is not None:  # charged once per request: a failover's hold keeps the first charge
            grant.admission = admission if isinstance(admission, Admission) else None
        failure = next((r for r in results if isinstance(r, BaseException)), None)
        if failure is None:
            return
        if isinstance(failure, BudgetExceeded):
            self.metrics.child(self.metrics.budget_rejections, _label(grant.team_label)).inc()
        elif isinstance(failure, RateLimitExceeded):
            self.metrics.child(self.metrics.rate_limit_rejections, _label(grant.team_label)).inc()
        await self.release(grant)
        if grant.admission is not None:  # refused for its budget: give the tokens back
            self.background.spawn(self.limiter.correct(grant.admission, 0))
            grant.admission = None
        raise failure

    async def _hold_and_admit(
        self, grant: Grant, spec: ModelSpec, input_tokens: int, max_tokens: int | None, tokens: int | None
    ) -> list[Any]:
        """[hold or None or the exception, (admission or the exception)]: with Redis both in one
        round trip, else one after the other."""
        key, team = grant.key, grant.team
        amount = None
        if key is not None and (key.budget_pico is not None or (team is not None and team.budget_pico is not None)):
            output = max_tokens or spec.max_output_tokens or self.config.default_max_output_tokens
            reserved_input = input_tokens + -(-input_tokens * self.config.input_margin_pct // 100)
            amount = worst_case_cost(spec.price, reserved_input, output)
        admit = tokens is not None and key is not None
        if key is None or (amount is None and not admit):
            return [None]
        queue_reserve = getattr(self.budgets, "queue_reserve", None)
        queue_admit = getattr(self.limiter, "queue_admit", None)
        if queue_reserve is not None and queue_admit is not None:
            batch = ScriptBatch(self.budgets.redis)  # type: ignore[attr-defined]
            ttl = self.config.hold_ttl_s
            finishers = [queue_reserve(batch, key, team, amount, ttl) if amount is not None else None]
            if admit:
                finishers.append(queue_admit(batch, key, tokens))
            replies = await batch.run()
            return [_outcome(f, replies) for f in finishers]
        hold = None
        if amount is not None:
            hold = await _caught(self.budgets.reserve(key, team, amount, self.config.hold_ttl_s))
        if not admit:
            return [hold]
        return [hold, await _caught(self.limiter.admit(key, tokens))]  # type: ignore[arg-type]

    async def release(self, grant: Grant) -> None:
        hold, grant.hold = grant.hold, None
        if hold is not None:
            try:
                await self.budgets.release(hold)
            except GatewayError as exc:  # the hold expires by itself
                log.warning("could not release budget hold %s: %s", hold.id, exc.message)

    def settle(self, grant: Grant, spec: ModelSpec, tier: str, cost_pico: int, tokens: int) -> None:
        """Record the actual cost: the budget settlement, the rate-limit correction and the
        spend aggregates run in the background (a disconnecting client cannot cancel them)."""
        now, key = datetime.now(UTC), grant.key
        hold, grant.hold = grant.hold, None
        if hold is not None:
            self.background.spawn(self.budgets.settle(hold, cost_pico, now))
        if grant.admission is not None:
            self.background.spawn(self.limiter.correct(grant.admission, tokens))
        self.background.spawn(self.stats.add(now, cost_pico, model=spec.name, tier=tier,
                                        key=key.id if key else "", team=key.team or "" if key else ""))

    async def replay_forever(self, interval_s: float = 2.0) -> None:
        """Replay settlements journaled while Redis was down, as soon as it answers again."""
        replay = getattr(self.budgets, "replay", None)
        while replay is not None:
            await asyncio.sleep(interval_s)
            try:
                replayed = await replay()
            except (*redis_errors(), OSError, ValueError) as exc:  # still down, or the journal unreadable
                log.debug("journal replay deferred: %r", exc)
                continue
            if replayed:
                log.warning("replayed %d journaled settlement(s) into Redis", replayed)

    async def refresh_gauges_forever(self) -> None:
        """Team budget gauges (one series per team with a budget, never per key)."""
        while True:
            await asyncio.sleep(self.config.gauge_interval_s)
            try:
                await self.refresh_gauges()
            except (*redis_errors(), GatewayError) as exc:
                log.debug("budget gauges not refreshed: %r", exc)

    async def refresh_gauges(self) -> None:
        for team in await self.keys.list_teams():
            if team.budget_pico is None:
                continue
            spend = await self.budgets.team_spend(team)
            used = (spend.spent + spend.reserved) / team.budget_pico if team.budget_pico else 1.0
            self.metrics.child(self.metrics.budget_used, team.name).set(used)
            self.metrics.child(self.metrics.budget_remaining, team.name).set((spend.remaining or 0) / PICO_PER_USD)



def _outcome(finish: Callable[[list[Any]], Any] | None, replies: list[Any]) -> Any:
    if finish is None:
        return None
    try:
        return finish(replies)
    except GatewayError as exc:
        return exc


async def _caught(work: Awaitable[Any]) -> Any:
    try:
        return await work
    except GatewayError as exc:
        return exc


def _label(team: str) -> str:
    return team or "none"
