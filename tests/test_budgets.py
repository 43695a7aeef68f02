"""Budgets: atomic key+team reservations, expiring holds, exact integer pico-USD; the memory and
Redis backends agree."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from redis.asyncio import Redis

from gateway.access.budgets import Budgets, Hold, MemoryBudgets
from gateway.access.budgets_redis import RedisBudgets
from gateway.access.keys import Team, VirtualKey
from gateway.errors import BudgetExceeded

Scenario = Callable[[Budgets], Coroutine[Any, Any, None]]
USD = 10**12


def vkey(budget: int | None = None, team: str | None = None, period: str = "total") -> VirtualKey:
    return VirtualKey(id=f"key-{uuid.uuid4().hex[:8]}", created_at=datetime.now(UTC), budget_pico=budget,
                      team=team, budget_period=period)  # type: ignore[arg-type]


def run_on_both(redis_url: str, scenario: Scenario) -> None:
    asyncio.run(scenario(MemoryBudgets()))

    async def on_redis() -> None:
        client = Redis.from_url(redis_url)
        try:
            await scenario(RedisBudgets(client, prefix=f"test-{uuid.uuid4().hex[:8]}"))
        finally:
            await client.aclose()

    asyncio.run(on_redis())


def test_reserve_settle_release_exact_figures(redis_url: str) -> None:
    async def scenario(budgets: Budgets) -> None:
        key = vkey(budget=1_000_000_000_007)  # $1.000000000007
        hold = await budgets.reserve(key, None, 600_000_000_003, hold_ttl_s=30)
        s = await budgets.spend(key)
        assert (s.spent, s.reserved, s.budget, s.remaining, s.period_end) == (
            0, 600_000_000_003, 1_000_000_000_007, 400_000_000_004, None)
        with pytest.raises(BudgetExceeded) as info:
            await budgets.reserve(key, None, 400_000_000_005, hold_ttl_s=30)
        assert info.value.status_code == 429 and info.value.headers == {"x-should-retry": "false"}
        assert "$0.600000000003 reserved of $1.000000000007" in info.value.message
        await budgets.settle(hold, 123_456_789_012)
        await budgets.settle(hold, 123_456_789_012)  # idempotent per hold
        s = await budgets.spend(key)
        assert (s.spent, s.reserved, s.remaining) == (123_456_789_012, 0, 876_543_210_995)
        second = await budgets.reserve(key, None, 876_543_210_995, hold_ttl_s=30)  # exactly the rest
        with pytest.raises(BudgetExceeded):
            await budgets.reserve(key, None, 1, hold_ttl_s=30)
        await budgets.release(second)
        assert (await budgets.spend(key)).remaining == 876_543_210_995

    run_on_both(redis_url, scenario)


def test_settle_is_never_refused_and_overshoot_is_the_excess(redis_url: str) -> None:
    async def scenario(budgets: Budgets) -> None:
        key = vkey(budget=100)
        hold = await budgets.reserve(key, None, 90, hold_ttl_s=30)
        await budgets.settle(hold, 130)  # upstream returned more than reserved
        s = await budgets.spend(key)
        assert (s.spent, s.remaining) == (130, 0)  # overshoot 30 == settle excess 40 minus the 10 left
        with pytest.raises(BudgetExceeded):
            await budgets.reserve(key, None, 0 + 1, hold_ttl_s=30)
        unlimited = vkey()
        await budgets.settle(await budgets.reserve(unlimited, None, 5, hold_ttl_s=30), 4)
        s = await budgets.spend(unlimited)
        assert (s.spent, s.budget, s.remaining) == (4, None, None)

    run_on_both(redis_url, scenario)


def test_expired_holds_are_freed(redis_url: str) -> None:
    async def scenario(budgets: Budgets) -> None:
        key = vkey(budget=50)
        await budgets.reserve(key, None, 50, hold_ttl_s=0.3)  # its process "dies": never settled
        with pytest.raises(BudgetExceeded):
            await budgets.reserve(key, None, 1, hold_ttl_s=0.3)
        await asyncio.sleep(0.4)
        s = await budgets.spend(key)
        assert (s.spent, s.reserved, s.remaining) == (0, 0, 50)
        fresh = await budgets.reserve(key, None, 50, hold_ttl_s=30)  # $0 spent: never refused for stale holds
        await budgets.release(fresh)
        slow = await budgets.reserve(key, None, 30, hold_ttl_s=0.3)
        await asyncio.sleep(0.4)  # the request outlived its hold...
        await budgets.settle(slow, 20)  # ...its cost still counts
        s = await budgets.spend(key)
        assert (s.spent, s.reserved, s.remaining) == (20, 0, 30)

    run_on_both(redis_url, scenario)


def test_team_budget_blocks_keys_with_their_own_budget_left(redis_url: str) -> None:
    async def scenario(budgets: Budgets) -> None:
        team = Team(name=f"t-{uuid.uuid4().hex[:6]}", budget_pico=10 * USD, budget_period="monthly")
        a, b = vkey(budget=100 * USD, team=team.name), vkey(budget=100 * USD, team=team.name)
        await budgets.settle(await budgets.reserve(a, team, 9 * USD, hold_ttl_s=30), 8 * USD)
        held = await budgets.reserve(b, team, 2 * USD, hold_ttl_s=30)
        with pytest.raises(BudgetExceeded, match="team") as info:
            await budgets.reserve(b, team, 1, hold_ttl_s=30)
        assert "$8 spent and $2 reserved of $10 (monthly)" in info.value.message
        key_spend = await budgets.spend(b)
        assert (key_spend.spent, key_spend.reserved, key_spend.remaining) == (0, 2 * USD, 98 * USD)  # nothing held
        team_spend = await budgets.team_spend(team)
        assert (team_spend.spent, team_spend.reserved, team_spend.remaining) == (8 * USD, 2 * USD, 0)
        assert team_spend.period_end is not None and team_spend.period_end.day == 1
        await budgets.release(held)
        await budgets.reserve(b, team, 2 * USD, hold_ttl_s=30)

    run_on_both(redis_url, scenario)


def test_spend_lands_in_the_period_it_happened(redis_url: str) -> None:
    async def scenario(budgets: Budgets) -> None:
        key = vkey(budget=10, period="daily")
        last_week = datetime.now(UTC) - timedelta(days=7)
        await budgets.settle(await budgets.reserve(key, None, 10, hold_ttl_s=30), 10, at=last_week)
        s = await budgets.spend(key)
        assert (s.spent, s.remaining) == (0, 10) and s.period_end is not None
        assert timedelta(0) < s.period_end - datetime.now(UTC) <= timedelta(days=1)

    run_on_both(redis_url, scenario)


def test_amounts_beyond_double_precision_are_compared_exactly(redis_url: str) -> None:
    async def scenario(budgets: Budgets) -> None:
        budget = 2**62 + 1  # ~$4.6M in pico-USD: far beyond 2^53, where doubles round
        key = vkey(budget=budget)
        await budgets.settle(await budgets.reserve(key, None, budget - 3, hold_ttl_s=30), budget - 3)
        with pytest.raises(BudgetExceeded):
            await budgets.reserve(key, None, 4, hold_ttl_s=30)
        await budgets.reserve(key, None, 2, hold_ttl_s=30)
        await budgets.reserve(key, None, 1, hold_ttl_s=30)
        with pytest.raises(BudgetExceeded):
            await budgets.reserve(key, None, 1, hold_ttl_s=30)
        s = await budgets.spend(key)
        assert (s.spent, s.reserved, s.remaining) == (budget - 3, 3, 0)

    run_on_both(redis_url, scenario)


def test_concurrent_reserves_across_processes_never_pass_the_budget(redis_url: str) -> None:
    """64 concurrent reservations of $0.07 through 4 separate clients against $1 on the key and
    $0.50 on the team: exactly 7 succeed (the team's budget binds)."""

    async def scenario() -> None:
        prefix = f"test-{uuid.uuid4().hex[:8]}"
        clients = [Redis.from_url(redis_url) for _ in range(4)]
        replicas = [RedisBudgets(c, prefix=prefix) for c in clients]
        team = Team(name="shared", budget_pico=USD // 2)
        key = vkey(budget=USD, team="shared")
        amount = 7 * USD // 100

        async def one(i: int) -> Hold | None:
            try:
                return await replicas[i % 4].reserve(key, team, amount, hold_ttl_s=30)
            except BudgetExceeded:
                return None

        holds = [h for h in await asyncio.gather(*(one(i) for i in range(64))) if h is not None]
        assert len(holds) == 7 and sum(h.amount for h in holds) == 49 * USD // 100 <= USD // 2
        assert (await replicas[0].team_spend(team)).reserved == 49 * USD // 100
        await asyncio.gather(*(replicas[i % 4].settle(h, amount) for i, h in enumerate(holds)))
        s = await replicas[1].spend(key)
        assert (s.spent, s.reserved, s.remaining) == (49 * USD // 100, 0, 51 * USD // 100)
        for c in clients:
            await c.aclose()

    asyncio.run(scenario())


def test_redis_keys_expire(redis_url: str) -> None:
    async def scenario() -> None:
        client = Redis.from_url(redis_url)
        prefix = f"test-{uuid.uuid4().hex[:8]}"
        budgets = RedisBudgets(client, prefix=prefix)
        key = vkey(budget=100, period="daily", team="tt")
        team = Team(name="tt", budget_pico=100, budget_period="weekly")
        await budgets.settle(await budgets.reserve(key, team, 5, hold_ttl_s=30), 5)
        await budgets.reserve(key, team, 5, hold_ttl_s=30)
        names = [n async for n in client.scan_iter(match=f"{prefix}:*")]
        assert len(names) == 7  # holds+held per scope, spent per scope, one settled mark
        for name in names:
            assert await client.pttl(name) > 0, name
        total = vkey(budget=100)  # 'total' spend is the budget itself: it must not expire
        await budgets.settle(await budgets.reserve(total, None, 1, hold_ttl_s=30), 1)
        assert await client.pttl(f"{prefix}:{{gw-budget}}:spent:key:{total.id}:total") == -1
        await client.aclose()

    asyncio.run(scenario())
