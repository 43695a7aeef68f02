"""Calendar-aligned budget periods, always in UTC.

    daily    starts at 00:00 UTC                       id 'd2025-03-14'
    weekly   starts on Monday 00:00 UTC (ISO weeks)     id 'w2025-03-10' (the Monday's date)
    monthly  starts on the 1st 00:00 UTC                id 'm2025-03'
    total    never ends                                 id 'total'

A period contains its start and excludes its end: 23:59:59.999999 on a Sunday is still in the
week, Monday 00:00:00 is the next week.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Literal, get_args

__all__ = ["PERIODS", "Period", "check_period", "period_of"]

Period = Literal["daily", "weekly", "monthly", "total"]
PERIODS: tuple[str, ...] = get_args(Period)


def check_period(value: str) -> Period:
    """`value` as a `Period`, or ValueError naming the allowed values."""
    if value not in PERIODS:
        raise ValueError(f"budget_period must be one of {', '.join(PERIODS)}, not {value!r}")
    return value  # type: ignore[return-value]


def _utc(at: datetime) -> datetime:
    if at.tzinfo is None:
        raise ValueError("budget periods need an aware datetime (UTC)")
    return at.astimezone(UTC)


def period_of(period: str, at: datetime) -> tuple[str, datetime | None]:
    """(period id, period end) of the `period` containing `at`; the end is None for 'total'."""
    check_period(period)
    if period == "total":
        return "total", None
    day = _utc(at).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "daily":
        return f"d{day:%Y-%m-%d}", day + timedelta(days=1)
    if period == "weekly":
        monday = day - timedelta(days=day.weekday())
        return f"w{monday:%Y-%m-%d}", monday + timedelta(days=7)
    first = day.replace(day=1)
    nxt = first.replace(year=first.year + 1, month=1) if first.month == 12 else first.replace(month=first.month + 1)
    return f"m{first:%Y-%m}", nxt
