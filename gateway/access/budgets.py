"""Budgets: reserve a request's worst-case cost before calling upstream, settle the actual cost
after. All money is integer pico-USD (gateway.money.pricing).

A request is admitted only if, for its key AND its team (each that has a budget),

    spent in the current period + reserved by live holds + this request's amount <= budget

checked and reserved in one atomic step, so concurrent requests (in any number of processes,
with `RedisBudgets`) can never jointly pass a budget. A hold is an expiring reservation: if the
process holding it dies, it stops counting after `hold_ttl_s` (choose it above the longest
request, e.g. the upstream timeout plus streaming time), and a key with nothing spent is never
refused because of stale holds.

Overshoot bound. When every request reserves its true worst case (input tokens plus max_tokens,
or the model's maximum output when the request sets none, priced by `estimate_cost`) and settles
at most that, spend never exceeds the budget: at every admission the sum of spend and all live
holds stays within it, and settling replaces a hold by a smaller or equal amount. Spend can
exceed the budget only when
  * `settle` is called with more than the hold (the upstream returned more than reserved, e.g.
    it ignored max_tokens, or the reservation under-counted input): the overshoot is at most the
    sum of those excesses;
  * a hold expired before its request settled (hold_ttl_s shorter than the request): the
    overshoot is at most the amounts of the requests admitted meanwhile against the freed room;
  * with `fail_open`, requests admitted while Redis was down (their settlements are journaled
    and replayed).
Settling is never refused: money already spent upstream is always recorded, even past the
budget; the next reservation is then refused.

`spend` / `team_spend` report spent, reserved and remaining for the current period.

With PostgreSQL as the record (`gateway.access.budgets_pg`), a live counter can be missing from
the hot store (a flushed Redis, a process that just started): it is rebuilt from the settled
spend before it is used. A queued reservation cannot wait for that, so its finisher raises
`CounterMissing`, and the caller makes the reservation again with `reserve`, which rebuilds.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple, Protocol

from gateway.access.keys import Team, VirtualKey
from gateway.access.periods import Period, period_of
from gateway.config.schema import BudgetConfig
from gateway.errors import BudgetExceeded
from gateway.money.pricing import Price, usd_text, worst_case_cost
from gateway.runtime.redis_scripts import Batch, NoBatch

__all__ = ["Budgets", "Counter", "CounterMissing", "Hold", "MemoryBudgets", "Scope", "Spend", "affordable_output",
           "check_pico", "held_output", "hold_amount", "new_hold", "scopes_of"]


@dataclass(frozen=True, slots=True)
class Hold:
    """A reservation of `amount` pico-USD against a key and (if it has one) its team."""

    id: str
    amount: int
    key_id: str
    key_period: Period
    team: str | None = None
    team_period: Period = "total"


@dataclass(frozen=True, slots=True)
class Spend:
    spent: int  # pico-USD settled in the current period
    reserved: int  # pico-USD held by live reservations
    budget: int | None
    remaining: int | None  # max(budget - spent - reserved, 0); None without a budget
    period_end: datetime | None  # None for 'total'


@dataclass(frozen=True, slots=True)
class Scope:
    """One budget a request is checked against: a key's or a team's."""

    name: str  # 'key:<id>' or 'team:<name>'
    period: Period
    budget: int | None
    label: str  # for messages, e.g. "key 'ci' (key-1a2b)"


class Counter(NamedTuple):
    """One live budget counter: a scope ('key:<id>' or 'team:<name>') in one period ('m2026-03', ...)."""

    scope: str
    period: str


class CounterMissing(Exception):
    """Live counters a queued reservation needs are not in the hot store: `reserve` rebuilds them
    from the record and holds."""

    def __init__(self, counters: list[Counter]) -> None:
        super().__init__(", ".join(f"{c.scope} {c.period}" for c in counters))
        self.counters = counters


def scopes_of(key: VirtualKey, team: Team | None) -> list[Scope]:
    """The key's scope, then its team's (a team without a record has no budget)."""
    label = f"key '{key.alias}' ({key.id})" if key.alias else f"key {key.id}"
    scopes = [Scope(f"key:{key.id}", key.budget_period, key.budget_pico, label)]
    if key.team is not None:
        budget, period = (team.budget_pico, team.budget_period) if team is not None else (None, "total")
        scopes.append(Scope(f"team:{key.team}", period, budget, f"team '{key.team}'"))
    return scopes


def hold_scopes(hold: Hold) -> list[tuple[str, Period]]:
    scopes: list[tuple[str, Period]] = [(f"key:{hold.key_id}", hold.key_period)]
    if hold.team is not None:
        scopes.append((f"team:{hold.team}", hold.team_period))
    return scopes


def check_pico(amount: int) -> int:
    if isinstance(amount, bool) or not isinstance(amount, int) or amount < 0:
        raise ValueError(f"amounts are integer pico-USD >= 0, not {amount!r}")
    return amount


def new_hold(key: VirtualKey, team: Team | None, amount: int) -> Hold:
    check_pico(amount)
    team_period: Period = team.budget_period if team is not None else "total"
    return Hold(uuid.uuid4().hex, amount, key.id, key.budget_period, key.team, team_period)


def refusal(scope: Scope, spent: int, reserved: int, amount: int) -> BudgetExceeded:
    assert scope.budget is not None
    return BudgetExceeded(
        f"Budget exceeded for {scope.label}: ${usd_text(spent)} spent and ${usd_text(reserved)} reserved "
        f"of ${usd_text(scope.budget)} ({scope.period}); this request may cost up to ${usd_text(amount)}."
    )


def make_spend(spent: int, reserved: int, budget: int | None, period: Period, now: datetime) -> Spend:
    remaining = max(budget - spent - reserved, 0) if budget is not None else None
    return Spend(spent, reserved, budget, remaining, period_of(period, now)[1])


def held_output(max_tokens: int | None, model_max_output: int | None, config: BudgetConfig) -> int:
    """The output tokens per answer a hold covers: `max_tokens`, else the model's maximum output,
    else `default_max_output_tokens`."""
    return max_tokens or model_max_output or config.default_max_output_tokens


def affordable_output(price: Price, input_tokens: int, remaining_pico: int, choices: int,
                      config: BudgetConfig) -> int:
    """The most output tokens per answer that `remaining_pico` can pay for after the request's
    reserved input (0: not even the input): what a budget-capped request may write."""
    reserved_input = input_tokens + -(-input_tokens * config.input_margin_pct // 100)
    base = worst_case_cost(price, reserved_input, 0)
    left = remaining_pico - base
    per_token = worst_case_cost(price, reserved_input, choices) - base  # one token of each answer
    return max(left // per_token, 0) if per_token > 0 else 0


def hold_amount(key: VirtualKey, team: Team | None, price: Price, input_tokens: int, max_tokens: int | None,
                model_max_output: int | None, config: BudgetConfig, choices: int = 1) -> int | None:
    """What a request must hold before calling a model of `price`: its worst case, or None when
    neither the key nor its team has a budget. Counted input tokens plus `input_margin_pct`
    (other tokenisers count more), every one at the dearest input rate, plus `max_tokens` (else
    the model's maximum output, else `default_max_output_tokens`) for each of the `choices`
    (`n`: each is written and billed) at the dearest output rate."""
    if key.budget_pico is None and (team is None or team.budget_pico is None):
        return None
    output = held_output(max_tokens, model_max_output, config) * choices
    reserved_input = input_tokens + -(-input_tokens * config.input_margin_pct // 100)
    return worst_case_cost(price, reserved_input, output)


class Budgets(Protocol):
    def new_batch(self) -> Batch:
        """A batch to queue a reservation in (with Redis, other calls can share its round trip)."""
        ...

    def queue_reserve(
        self, batch: Batch, key: VirtualKey, team: Team | None, amount_pico: int, hold_ttl_s: float
    ) -> Callable[[list[Any]], Hold]:
        """Queue holding `amount_pico` against the key and its team; the returned function turns
        the batch's results into the Hold, or raises BudgetExceeded (nothing held), or
        CounterMissing (nothing held: `reserve` instead)."""
        ...

    async def reserve(self, key: VirtualKey, team: Team | None, amount_pico: int, hold_ttl_s: float) -> Hold:
        """Hold `amount_pico` against the key and its team, or raise BudgetExceeded (nothing held)."""
        ...

    async def settle(self, hold: Hold, actual_pico: int, at: datetime | None = None) -> None:
        """Remove the hold and add the actual cost to the spend of the period containing `at`
        (default now). Never refused; idempotent per hold id."""
        ...

    async def release(self, hold: Hold) -> None:
        """Remove the hold without spending (the request failed before costing anything)."""
        ...

    async def spend(self, key: VirtualKey) -> Spend: ...

    async def team_spend(self, team: Team) -> Spend: ...

    async def replay(self) -> int:
        """Apply settlements journaled while the store was down; how many (0: none waiting)."""
        ...

    def backlog(self) -> tuple[int, int]:
        """Settlements not yet in the system of record: (queued, in the local journal); (0, 0)
        where there is no separate record (memory, Redis alone)."""
        ...

    async def run(self) -> None:
        """Background writing (settled spend to the record) until `stop`; returns at once when
        there is none. Stop it with `stop`, never by cancelling it."""
        ...

    def stop(self) -> None:
        """Ask `run` to write what is queued and return."""
        ...


class MemoryBudgets:
    """The same semantics for one process (no Redis)."""

    def __init__(self, settled_ttl_s: float = 7 * 86400) -> None:
        self._spent: dict[tuple[str, str], int] = {}  # (scope, period id) -> pico
        self._holds: dict[str, dict[str, tuple[float, int]]] = {}  # scope -> hold id -> (expiry, amount)
        self._settled: dict[str, float] = {}  # hold id -> forget after (idempotent settle)
        self._settled_ttl = settled_ttl_s

    def _live(self, scope: str) -> dict[str, tuple[float, int]]:
        now = time.time()
        holds = self._holds.setdefault(scope, {})
        for hold_id in [h for h, (expiry, _) in holds.items() if expiry <= now]:
            del holds[hold_id]
        return holds

    def _spent_now(self, scope: str, period: Period, at: datetime) -> int:
        return self._spent.get((scope, period_of(period, at)[0]), 0)

    def new_batch(self) -> Batch:
        return NoBatch()

    def queue_reserve(
        self, batch: Batch, key: VirtualKey, team: Team | None, amount_pico: int, hold_ttl_s: float
    ) -> Callable[[list[Any]], Hold]:
        """Nothing to send: the reservation is made when the batch's results are read."""
        return lambda _: self._reserve(key, team, amount_pico, hold_ttl_s)

    async def reserve(self, key: VirtualKey, team: Team | None, amount_pico: int, hold_ttl_s: float) -> Hold:
        return self._reserve(key, team, amount_pico, hold_ttl_s)

    def _reserve(self, key: VirtualKey, team: Team | None, amount_pico: int, hold_ttl_s: float) -> Hold:
        hold = new_hold(key, team, amount_pico)
        now = datetime.now(UTC)
        scopes = scopes_of(key, team)
        for scope in scopes:
            reserved = sum(amount for _, amount in self._live(scope.name).values())
            spent = self._spent_now(scope.name, scope.period, now)
            if scope.budget is not None and spent + reserved + amount_pico > scope.budget:
                raise refusal(scope, spent, reserved, amount_pico)
        expiry = time.time() + hold_ttl_s
        for scope in scopes:
            self._holds[scope.name][hold.id] = (expiry, amount_pico)
        return hold

    async def settle(self, hold: Hold, actual_pico: int, at: datetime | None = None) -> None:
        check_pico(actual_pico)
        now = time.time()
        if self._settled.get(hold.id, 0.0) > now:
            return
        if len(self._settled) > 10_000:
            self._settled = {h: until for h, until in self._settled.items() if until > now}
        self._settled[hold.id] = now + self._settled_ttl
        at = at or datetime.now(UTC)
        for scope, period in hold_scopes(hold):
            self._holds.get(scope, {}).pop(hold.id, None)
            slot = (scope, period_of(period, at)[0])
            self._spent[slot] = self._spent.get(slot, 0) + actual_pico

    async def release(self, hold: Hold) -> None:
        for scope, _ in hold_scopes(hold):
            self._holds.get(scope, {}).pop(hold.id, None)

    async def spend(self, key: VirtualKey) -> Spend:
        return self._report(scopes_of(key, None)[0])

    async def team_spend(self, team: Team) -> Spend:
        return self._report(Scope(f"team:{team.name}", team.budget_period, team.budget_pico, team.name))

    async def replay(self) -> int:
        return 0  # nothing is ever journaled: memory is never down

    def backlog(self) -> tuple[int, int]:
        return 0, 0

    async def run(self) -> None:
        return None

    def stop(self) -> None:
        return None

    def _report(self, scope: Scope) -> Spend:
        now = datetime.now(UTC)
        reserved = sum(amount for _, amount in self._live(scope.name).values())
        return make_spend(self._spent_now(scope.name, scope.period, now), reserved, scope.budget, scope.period, now)
