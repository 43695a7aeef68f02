"""Spend forecast: per key and team, how fast it spends and where that leads by its period's end.

    burn rate               window spend / window            (the last `budgets.forecast_window_s`)
    projected period spend  spent + rate x time left         (None for a 'total' budget: no end)
    exhaustion              remaining / rate                 (0 once nothing remains; never (+Inf)
                                                              without a budget or without spending)
    runs out before the end exhaustion < time left in the period ('total': never)

The window's spend is read from the spend ledger, the book of record, so every replica (and every
backend) computes the same figures: with PostgreSQL or SQLite one SQL sum grouped by key and team,
with Redis the window's stream entries only (`sums` in `gateway/ledger/store_*.py`), in memory
this process's records.

The window is always the whole window, also when the budget period began within it: the rate is
how fast a key or team spends, which a budget reset does not change. Spend before the reset is
evidence of it, while a window cut to the seconds since midnight would turn the first request of a
day into a rate fit to fire an alert at every reset. `spent` and `remaining` are the budget's own
figures for the current period (`Budgets.spend` / `team_spend`); `remaining` counts live holds as
spent, as the budget does.

Money is integer pico-USD and durations integer microseconds: the figures are exact fractions,
rounded once (to the pico-dollar, to the microsecond) when shown.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from fractions import Fraction
from typing import NamedTuple, Protocol, runtime_checkable

from gateway.access.budgets import Budgets, Spend
from gateway.access.keys import Team, VirtualKey
from gateway.ledger.store import Ledger

__all__ = ["Forecast", "WindowSpend", "WindowSums", "forecast_keys", "forecast_teams", "live_keys", "window_spend"]

_US = 1_000_000  # microseconds a second


@runtime_checkable
class WindowSums(Protocol):
    """A ledger that sums a time range where it is kept (PostgreSQL, SQLite, Redis)."""

    async def sums(self, start: datetime, end: datetime) -> dict[tuple[str, str], int]: ...


class WindowSpend(NamedTuple):
    """Pico-USD spent in the window, per key id and per team (records without one left out)."""

    by_key: dict[str, int]
    by_team: dict[str, int]


async def window_spend(ledger: Ledger, end: datetime, window_s: int) -> WindowSpend:
    """What each key and team spent in [end - window_s, end), from the ledger."""
    start = end - timedelta(seconds=window_s)
    pairs: dict[tuple[str, str], int]
    if isinstance(ledger, WindowSums):
        pairs = await ledger.sums(start, end)
    else:
        pairs = defaultdict(int)
        async for page in ledger.pages(start, end):
            for record in page:
                pairs[(record.key_id, record.team)] += record.cost_pico
    by_key: dict[str, int] = defaultdict(int)
    by_team: dict[str, int] = defaultdict(int)
    for (key_id, team), pico in pairs.items():
        if key_id:
            by_key[key_id] += pico
        if team:
            by_team[team] += pico
    return WindowSpend(dict(by_key), dict(by_team))


def _us(delta: timedelta) -> int:
    return delta // timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class Forecast:
    """One key's or team's forecast at `now`: its budget position and `window_pico` spent in the
    last `window_s` seconds."""

    spend: Spend
    window_pico: int
    window_s: int
    now: datetime

    @property
    def rate_pico_per_hour(self) -> int:
        return round(Fraction(self.window_pico * 3600, self.window_s))

    @property
    def period_left_us(self) -> int | None:
        """Microseconds until the budget period ends; None for 'total'."""
        end = self.spend.period_end
        return None if end is None else max(_us(end - self.now), 0)

    @property
    def projected_period_pico(self) -> int | None:
        """Spent by the period's end at the burn rate; None for 'total'."""
        left = self.period_left_us
        if left is None:
            return None
        return self.spend.spent + round(Fraction(self.window_pico * left, self.window_s * _US))

    @property
    def exhaustion_us(self) -> int | None:
        """Microseconds until the remaining budget is spent at the burn rate: 0 when nothing
        remains, None when never (no budget, or nothing spent in the window)."""
        remaining = self.spend.remaining
        if remaining is None:
            return None
        if remaining == 0:
            return 0
        if self.window_pico == 0:
            return None
        return round(Fraction(remaining * self.window_s * _US, self.window_pico))

    @property
    def exhaustion_s(self) -> float:
        """Seconds until the budget runs out; +Inf when never."""
        us = self.exhaustion_us
        return math.inf if us is None else us / _US

    @property
    def period_left_s(self) -> float:
        """Seconds until the period ends; +Inf for 'total'."""
        us = self.period_left_us
        return math.inf if us is None else us / _US

    @property
    def exhaustion_at(self) -> datetime | None:
        us = self.exhaustion_us
        if us is None:
            return None
        try:
            return self.now + timedelta(microseconds=us)
        except OverflowError:  # beyond the year 9999: never, as far as anyone is concerned
            return None

    @property
    def runs_out_before_period_end(self) -> bool:
        left, us = self.period_left_us, self.exhaustion_us
        return left is not None and us is not None and us < left


def live_keys(keys: Iterable[VirtualKey], now: datetime) -> list[VirtualKey]:
    """The keys that can still spend: not revoked, not expired."""
    return [k for k in keys if not k.revoked and (k.expires_at is None or k.expires_at > now)]


async def forecast_teams(teams: Iterable[Team], budgets: Budgets, window: WindowSpend, window_s: int,
                         now: datetime) -> list[tuple[Team, Forecast]]:
    return [(team, Forecast(await budgets.team_spend(team), window.by_team.get(team.name, 0), window_s, now))
            for team in teams]


async def forecast_keys(keys: Iterable[VirtualKey], budgets: Budgets, window: WindowSpend, window_s: int,
                        now: datetime) -> list[tuple[VirtualKey, Forecast]]:
    return [(key, Forecast(await budgets.spend(key), window.by_key.get(key.id, 0), window_s, now))
            for key in keys]
