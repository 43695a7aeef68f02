"""No spend is lost when Redis is down at settle time: settlements go to a local journal and are
replayed, once each, when Redis is back. Stops a PRIVATE redis-server, never the shared one."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import free_port, start_redis_server
from redis.asyncio import Redis

from gateway.access.budgets_redis import RedisBudgets
from gateway.access.journal import Settlement, SpendJournal
from gateway.access.keys import Team, VirtualKey
from gateway.errors import ServiceUnavailable


class PrivateRedis:
    """A redis-server with an append-only file, so a restart keeps what it had."""

    def __init__(self, data_dir: Path) -> None:
        self.dir, self.port = data_dir, free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = self.start()

    def start(self) -> subprocess.Popen[bytes]:
        return start_redis_server(self.port, self.dir)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    yield server
    server.proc.kill()
    server.proc.wait(10)


def test_settlements_during_an_outage_are_replayed_once(private_redis: PrivateRedis, tmp_path: Path) -> None:
    async def scenario() -> None:
        client = Redis.from_url(private_redis.url, socket_timeout=1, socket_connect_timeout=0.5)
        journal = SpendJournal(tmp_path / "journal" / "spend.jsonl")
        budgets = RedisBudgets(client, prefix="test-journal", journal=journal)
        team = Team(name="ml", budget_pico=10**12, budget_period="monthly")
        key = VirtualKey(id="key-j", created_at=datetime.now(UTC), team="ml", budget_pico=10**12)
        holds = [await budgets.reserve(key, team, 100_000_000_007, hold_ttl_s=60) for _ in range(3)]
        await budgets.settle(holds[0], 11_111_111_111)

        private_redis.stop()
        await budgets.settle(holds[1], 22_222_222_222)  # Redis down: journaled, not raised
        await budgets.settle(holds[2], 33_333_333_333)
        assert [(s.hold.id, s.actual) for s in journal.pending()] == [
            (holds[1].id, 22_222_222_222), (holds[2].id, 33_333_333_333)]
        with pytest.raises(ServiceUnavailable):
            await budgets.reserve(key, team, 1, hold_ttl_s=60)
        opened = RedisBudgets(client, prefix="test-journal", journal=journal, fail_open=True)
        assert (await opened.reserve(key, team, 1, hold_ttl_s=60)).amount == 1

        private_redis.proc = private_redis.start()
        # The first settlement, journaled again (a settle that reached Redis though the client
        # saw an error): replay must not count it twice.
        journal.append(Settlement(holds[0], 11_111_111_111, datetime.now(UTC)))
        assert await budgets.replay() == 2  # three entries, two not yet in Redis
        assert journal.pending() == [] and await budgets.replay() == 0
        expected = 11_111_111_111 + 22_222_222_222 + 33_333_333_333
        s = await budgets.spend(key)
        assert (s.spent, s.reserved, s.remaining) == (expected, 0, 10**12 - expected)
        assert (await budgets.team_spend(team)).spent == expected
        await client.aclose()

    asyncio.run(scenario())


def test_failed_replay_keeps_the_entries(private_redis: PrivateRedis, tmp_path: Path) -> None:
    async def scenario() -> None:
        client = Redis.from_url(private_redis.url, socket_timeout=1, socket_connect_timeout=0.5)
        journal = SpendJournal(tmp_path / "spend.jsonl")
        budgets = RedisBudgets(client, prefix="test-journal", journal=journal)
        key = VirtualKey(id="key-k", created_at=datetime.now(UTC))
        hold = await budgets.reserve(key, None, 5, hold_ttl_s=60)
        private_redis.stop()
        await budgets.settle(hold, 5)
        with (tmp_path / "spend.jsonl").open("ab") as f:
            f.write(b'{"id": "torn')  # a crash mid-line
        with pytest.raises(Exception):  # noqa: B017 - whatever the Redis client raises when down
            await budgets.replay()
        assert [s.actual for s in journal.pending()] == [5]  # still there, moved aside
        await budgets.settle(hold, 5)  # journaled twice (e.g. a retry): must count once
        private_redis.proc = private_redis.start()
        assert await budgets.replay() == 1  # the torn line is skipped (logged), the duplicate counted once
        assert (await budgets.spend(key)).spent == 5
        await client.aclose()

    asyncio.run(scenario())
