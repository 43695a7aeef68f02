"""Who is calling and what they may spend, per request: the virtual key (401 if unknown,
revoked or expired; 401 without one when `require_keys`), what it may use (403), its RPM/TPM
limits (429 `rate_limit_exceeded` with `retry-after`) and its budget and its team's (429
`budget_exceeded`, `x-should-retry: false`), all before any provider is called.

Before each attempt the request reserves its worst case for the model about to be called
(`budgets.hold_amount`), together with its rate-limit charge on the first attempt: one Redis
round trip for both. After the call the reservation is settled at the actual cost, or released
if the call failed before producing anything billable. Settling runs as its own task, started
before the answer is sent and not waited for: the answer does not wait for a Redis round trip,
and a client that disconnects mid-stream cannot cancel it. With Redis the settlement rides in
front of the next reservation this process sends (its round trip, not one of its own), or goes
after 10 ms if no reservation comes first (`gateway.runtime.redis_scripts.Riders`). Until it
lands the request's hold, its worst case, still counts against the budget, so this can only make
a budget briefly stricter, never looser; and this process's next reservation always sees it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import Any, NamedTuple

from gateway.access.budgets import (
    Budgets,
    CounterMissing,
    Hold,
    affordable_output,
    held_output,
    hold_amount,
    new_hold,
)
from gateway.access.forecast import Forecast, window_spend
from gateway.access.keys import SECRET_PREFIX, KeyStore, Team, VirtualKey, check_allowed
from gateway.access.ratelimit import Admission, RateLimiter
from gateway.config.schema import BudgetConfig
from gateway.config.settings import ModelSpec
from gateway.errors import AuthenticationFailed, BudgetExceeded, GatewayError, RateLimitExceeded
from gateway.ledger.store import Ledger
from gateway.money.pricing import PICO_PER_USD, Price
from gateway.observability.metrics import Metrics
from gateway.runtime.background import Background
from gateway.runtime.redis_errors import redis_errors

__all__ = ["NO_RESERVATION", "Access", "Grant", "Reservation"]

log = logging.getLogger("gateway.access")


class Grant(NamedTuple):
    """The caller's virtual key and its team; both None for an anonymous caller (allowed when
    keys are not required)."""

    key: VirtualKey | None = None
    team: Team | None = None

    @property
    def team_label(self) -> str:
        return self.key.team or "" if self.key is not None else ""


ANONYMOUS = Grant()


class Reservation(NamedTuple):
    """What one attempt holds: its budget hold (None without a budget) and the request's rate-
    limit admission (taken once per request, carried from one attempt to the next)."""

    hold: Hold | None = None
    admission: Admission | None = None
    # the output tokens per answer the hold covers, when the upstream must be told (sent as its
    # max_tokens): lowered to what the budget can pay, or the hold's default when the client set none
    max_output: int | None = None
    capped: bool = False  # lowered below what the request asked for (the x-gateway-max-tokens header)


NO_RESERVATION = Reservation()


class Access:
    def __init__(self, keys: KeyStore, budgets: Budgets, limiter: RateLimiter, metrics: Metrics,
                 config: BudgetConfig, require_keys: bool, background: Background) -> None:
        self.keys = keys
        self.budgets = budgets
        self.limiter = limiter
        self._metrics = metrics
        self._config = config
        self._require_keys = require_keys
        self._background = background

    async def authenticate(self, authorization: str | None) -> Grant:
        scheme, _, secret = (authorization or "").partition(" ")
        secret = secret.strip() if scheme.lower() == "bearer" else ""
        if not secret.startswith(SECRET_PREFIX):
            if self._require_keys:
                raise AuthenticationFailed("A gateway key is required: send 'Authorization: Bearer sk-gw-...'.")
            return ANONYMOUS
        key = await self.keys.authenticate(secret)
        team = await self.keys.get_team(key.team) if key.team else None
        return Grant(key, team)

    def check(self, grant: Grant, model: str | None, tier: str | None) -> None:
        if grant.key is not None:
            check_allowed(grant.key, model, tier)

    async def admit_estimate(self, grant: Grant) -> None:
        """An estimate counts as one request against the key's RPM (no tokens: nothing is
        generated); 429 if the key is over it."""
        key = grant.key
        if key is not None and key.rpm is not None:
            try:
                await self.limiter.admit(key, 0)
            except RateLimitExceeded:
                self._metrics.child(self._metrics.rate_limit_rejections, _label(grant.team_label)).inc()
                raise

    def rate_charge(self, grant: Grant, tokens: int) -> int | None:
        """The tokens to charge against the key's RPM/TPM (once per request, with the first
        attempt's hold), or None when the key has no rate limit."""
        key = grant.key
        return tokens if key is not None and (key.rpm is not None or key.tpm is not None) else None

    async def reserve(self, grant: Grant, spec: ModelSpec, input_tokens: int, max_tokens: int | None, choices: int,
                      charge: int | None, carried: Admission | None, priority: bool = False) -> Reservation:
        """Hold the worst case of calling `spec` for `choices` answers against the key's and the
        team's budgets (at the priority service tier's price if the request asks for it, else at
        the default one, which a flex request may fall back to), and take the rate-limit `charge`
        if there is one (else keep the `carried` admission); raise 429 if either refuses, undoing
        the other."""
        key = grant.key
        if key is None:
            return NO_RESERVATION
        price = spec.price.for_service("priority") if priority else spec.price
        reservation, failure, budgeted = await self._take(grant, spec, price, input_tokens, max_tokens, choices,
                                                          charge, carried)
        if isinstance(failure, BudgetExceeded):  # what can the rest of the budget pay for?
            cap = await self._affordable(grant, price, input_tokens, choices)
            if self._config.min_capped_output_tokens <= cap < held_output(max_tokens, spec.max_output_tokens,
                                                                           self._config):
                await self._undo(reservation)
                reservation, failure, _ = await self._take(grant, spec, price, input_tokens, cap, choices, charge,
                                                           carried)
                if failure is None:
                    return reservation._replace(max_output=cap, capped=True)
        if failure is not None:
            await self._refused(grant, reservation, failure)
        if budgeted and max_tokens is None and spec.max_output_tokens is None:  # bound the answer to its hold
            return reservation._replace(max_output=self._config.default_max_output_tokens)
        return reservation

    async def _affordable(self, grant: Grant, price: Price, input_tokens: int, choices: int) -> int:
        """The most output tokens per answer the key's and team's remaining budgets can pay for."""
        assert grant.key is not None
        spends = [await self.budgets.spend(grant.key)]
        if grant.team is not None:
            spends.append(await self.budgets.team_spend(grant.team))
        remaining = min((s.remaining for s in spends if s.remaining is not None), default=None)
        if remaining is None:
            return 0
        return affordable_output(price, input_tokens, remaining, choices, self._config)

    async def _take(self, grant: Grant, spec: ModelSpec, price: Price, input_tokens: int, max_tokens: int | None,
                    choices: int, charge: int | None, carried: Admission | None,
                    ) -> tuple[Reservation, BaseException | None, bool]:
        """The hold and the admission, in one batch: what was taken, what refused, and whether the
        key or team has a budget."""
        key, team = grant.key, grant.team
        assert key is not None
        amount = hold_amount(key, team, price, input_tokens, max_tokens, spec.max_output_tokens, self._config, choices)
        if amount is None and charge is None:
            return Reservation(None, carried), None, False
        batch = self.budgets.new_batch()  # with Redis: the hold and the admission in one round trip
        hold = self.budgets.queue_reserve(batch, key, team, amount, self._config.hold_ttl_s) if amount is not None \
            else None
        admit = self.limiter.queue_admit(batch, key, charge) if charge is not None else None
        replies = await batch.run()
        held, admitted = _outcome(hold, replies), _outcome(admit, replies)
        if isinstance(held, CounterMissing) and amount is not None:  # rebuilt from the record, then held
            held = await _awaited(self.budgets.reserve(key, team, amount, self._config.hold_ttl_s))
        reservation = Reservation(held if isinstance(held, Hold) else None,
                                  admitted if isinstance(admitted, Admission) else carried)
        failure = next((r for r in (held, admitted) if isinstance(r, BaseException)), None)
        return reservation, failure, amount is not None

    async def _undo(self, reservation: Reservation) -> None:
        await self.release(reservation)
        if reservation.admission is not None:  # refused: the request's tokens go back
            self._background.spawn(self.limiter.correct(reservation.admission, 0))

    async def _refused(self, grant: Grant, reservation: Reservation, failure: BaseException) -> None:
        """Undo what was taken and raise why the request was refused."""
        if isinstance(failure, BudgetExceeded):
            self._metrics.child(self._metrics.budget_rejections, _label(grant.team_label)).inc()
        elif isinstance(failure, RateLimitExceeded):
            self._metrics.child(self._metrics.rate_limit_rejections, _label(grant.team_label)).inc()
        await self._undo(reservation)
        raise failure

    async def release(self, reservation: Reservation) -> None:
        """The attempt failed before costing anything: its hold goes (the admission stays)."""
        hold = reservation.hold
        if hold is not None:
            try:
                await self.budgets.release(hold)
            except GatewayError as exc:  # the hold expires by itself
                log.warning("could not release budget hold %s: %s", hold.id, exc.message)

    def settle(self, grant: Grant, reservation: Reservation, cost_pico: int, tokens: int, at: datetime) -> None:
        """Record the actual cost against the key (and team), with or without a budget, and
        correct the rate-limit charge; in the background (a disconnecting client cannot cancel
        it)."""
        key = grant.key
        if key is None:
            return
        hold = reservation.hold or new_hold(key, grant.team, 0)  # no budget: the spend is still the key's
        self._background.spawn(self.budgets.settle(hold, cost_pico, at))
        if reservation.admission is not None:
            self._background.spawn(self.limiter.correct(reservation.admission, tokens))

    async def replay_forever(self, interval_s: float = 2.0) -> None:
        """Replay settlements journaled while Redis (or the database) was down, as soon as it answers again."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                replayed = await self.budgets.replay()
            except Exception as exc:  # still down, or the journal unreadable
                if not isinstance(exc, (*redis_errors(), OSError, ValueError)):
                    raise
                log.debug("journal replay deferred: %r", exc)
                continue
            if replayed:
                log.warning("replayed %d journaled settlement(s)", replayed)

    async def refresh_gauges_forever(self, ledger: Ledger | None = None) -> None:
        """Team budget gauges (one series per team with a budget, never per key); with the spend
        `ledger`, the forecast's too."""
        while True:
            await asyncio.sleep(self._config.gauge_interval_s)
            try:
                await self.refresh_gauges(ledger)
            except Exception as exc:
                if not isinstance(exc, (*redis_errors(), GatewayError)):
                    raise
                log.debug("budget gauges not refreshed: %r", exc)

    async def refresh_gauges(self, ledger: Ledger | None = None) -> None:
        """Per team with a budget: used ratio and remaining USD; with the spend `ledger`, also the
        seconds until the budget runs out at the recent burn rate and until its period ends
        (`gateway/access/forecast.py`; +Inf for never and for 'total')."""
        metrics = self._metrics
        now = datetime.now(UTC)
        spends = [(team, await self.budgets.team_spend(team)) for team in await self.keys.list_teams()
                  if team.budget_pico is not None]
        for team, spend in spends:
            used = (spend.spent + spend.reserved) / team.budget_pico if team.budget_pico else 1.0
            metrics.child(metrics.budget_used, team.name).set(used)
            metrics.child(metrics.budget_remaining, team.name).set((spend.remaining or 0) / PICO_PER_USD)
        if ledger is None or not spends:
            return
        window_s = self._config.forecast_window_s
        window = await window_spend(ledger, now, window_s)
        for team, spend in spends:
            forecast = Forecast(spend, window.by_team.get(team.name, 0), window_s, now)
            metrics.child(metrics.budget_exhaustion, team.name).set(forecast.exhaustion_s)
            metrics.child(metrics.budget_period_left, team.name).set(forecast.period_left_s)


def _outcome(finish: Any, replies: list[Any]) -> Any:
    """A queued call's result: its value, or the GatewayError it refused with (or CounterMissing)."""
    if finish is None:
        return None
    try:
        return finish(replies)
    except (GatewayError, CounterMissing) as exc:
        return exc


async def _awaited(work: Awaitable[Hold]) -> Hold | GatewayError:
    try:
        return await work
    except GatewayError as exc:
        return exc


def _label(team: str) -> str:
    return team or "none"
