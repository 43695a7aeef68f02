"""Calendar-aligned UTC budget periods, at their boundaries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from gateway.access.periods import period_of

TICK = timedelta(microseconds=1)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


@pytest.mark.parametrize(
    ("period", "at", "expected"),
    [
        ("daily", utc(2025, 3, 14, 0, 0), ("d2025-03-14", utc(2025, 3, 15))),
        ("daily", utc(2025, 3, 14) - TICK, ("d2025-03-13", utc(2025, 3, 14))),
        ("daily", utc(2024, 12, 31, 23, 59, 59), ("d2024-12-31", utc(2025, 1, 1))),
        ("daily", utc(2024, 2, 28, 12), ("d2024-02-28", utc(2024, 2, 29))),
        # 2025-03-10 is a Monday; Sunday 23:59:59.999999 is still the previous week.
        ("weekly", utc(2025, 3, 10), ("w2025-03-10", utc(2025, 3, 17))),
        ("weekly", utc(2025, 3, 10) - TICK, ("w2025-03-03", utc(2025, 3, 10))),
        ("weekly", utc(2025, 3, 16, 23, 59, 59), ("w2025-03-10", utc(2025, 3, 17))),
        ("weekly", utc(2025, 1, 1), ("w2024-12-30", utc(2025, 1, 6))),  # week spans the new year
        ("monthly", utc(2025, 3, 1), ("m2025-03", utc(2025, 4, 1))),
        ("monthly", utc(2025, 3, 1) - TICK, ("m2025-02", utc(2025, 3, 1))),
        ("monthly", utc(2025, 12, 31, 23, 59), ("m2025-12", utc(2026, 1, 1))),
        ("monthly", utc(2024, 2, 29, 5), ("m2024-02", utc(2024, 3, 1))),
        ("total", utc(2025, 3, 1), ("total", None)),
    ],
)
def test_period_boundaries(period: str, at: datetime, expected: tuple[str, datetime | None]) -> None:
    assert period_of(period, at) == expected


def test_other_time_zones_are_converted_to_utc() -> None:
    # 2025-03-10 01:00 in UTC+02:00 is Sunday 2025-03-09 23:00 UTC: previous day, week and month-day.
    at = datetime(2025, 3, 10, 1, 0, tzinfo=timezone(timedelta(hours=2)))
    assert period_of("daily", at) == ("d2025-03-09", utc(2025, 3, 10))
    assert period_of("weekly", at) == ("w2025-03-03", utc(2025, 3, 10))


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="budget_period"):
        period_of("yearly", utc(2025, 1, 1))
    with pytest.raises(ValueError, match="aware"):
        period_of("daily", datetime(2025, 1, 1))  # noqa: DTZ001
