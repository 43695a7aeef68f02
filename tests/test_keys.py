"""Virtual keys: secrets stored only as hashes, revocation and expiry, permissions, teams;
the memory and Redis stores behave the same."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from redis.asyncio import Redis

from gateway.access.keys import KeyStore, MemoryKeyStore, Team, budget_pico_from_usd, check_allowed, secret_hash
from gateway.access.keys_redis import RedisKeyStore
from gateway.errors import AuthenticationFailed, InvalidRequest, NotFound, PermissionDenied

Scenario = Callable[[KeyStore], Coroutine[Any, Any, None]]


def run_on_both(redis_url: str, scenario: Scenario) -> None:
    asyncio.run(scenario(MemoryKeyStore()))

    async def on_redis() -> None:
        client = Redis.from_url(redis_url)
        try:
            await scenario(RedisKeyStore(client, prefix=f"test-{uuid.uuid4().hex[:8]}", cache_ttl_s=0))
        finally:
            await client.aclose()

    asyncio.run(on_redis())


def test_create_authenticate_update_revoke(redis_url: str) -> None:
    async def scenario(store: KeyStore) -> None:
        key, secret = await store.create(alias="ci", team="ml", models=["gpt-test"], budget_pico=5 * 10**12,
                                         budget_period="monthly", rpm=10)
        assert secret.startswith("sk-gw-") and len(secret) > 40 and key.id not in secret
        assert (await store.authenticate(secret)) == key
        assert key.models == ("gpt-test",) and key.budget_pico == 5_000_000_000_000 and key.tiers is None
        updated = await store.update(key.id, rpm=20, tiers=["economy"])
        assert (updated.rpm, updated.tiers, updated.alias, updated.budget_pico) == (20, ("economy",), "ci", 5 * 10**12)
        assert await store.get(key.id) == updated
        assert [k.id for k in await store.list()] == [key.id]
        assert "key" not in updated.public() and updated.public()["budget_usd"] == 5.0
        await store.revoke(key.id)
        with pytest.raises(AuthenticationFailed, match="revoked") as info:
            await store.authenticate(secret)
        assert secret not in info.value.message and info.value.status_code == 401
        for bad in ("sk-gw-nope", "", "Bearer x", secret + "x"):
            with pytest.raises(AuthenticationFailed):
                await store.authenticate(bad)
        with pytest.raises(NotFound):
            await store.update("key-missing", rpm=1)
        with pytest.raises(NotFound):
            await store.revoke("key-missing")
        with pytest.raises(InvalidRequest) as bad_field:
            await store.update(key.id, budget_period="yearly")
        assert bad_field.value.param == "budget_period"

    run_on_both(redis_url, scenario)


def test_expired_keys_are_refused(redis_url: str) -> None:
    async def scenario(store: KeyStore) -> None:
        past = datetime.now(UTC) - timedelta(seconds=1)
        _, old = await store.create(expires_at=past.isoformat())
        _, fresh = await store.create(expires_at=datetime.now(UTC) + timedelta(hours=1))
        with pytest.raises(AuthenticationFailed, match="expired"):
            await store.authenticate(old)
        assert (await store.authenticate(fresh)).expires_at is not None
        with pytest.raises(InvalidRequest, match="time zone"):
            await store.create(expires_at="2030-01-01T00:00:00")

    run_on_both(redis_url, scenario)


def test_teams(redis_url: str) -> None:
    async def scenario(store: KeyStore) -> None:
        assert await store.get_team("ml") is None
        await store.set_team(Team(name="ml", budget_pico=7, budget_period="weekly"))
        await store.set_team(Team(name="ops"))
        assert await store.get_team("ml") == Team(name="ml", budget_pico=7, budget_period="weekly")
        assert [t.name for t in await store.list_teams()] == ["ml", "ops"]

    run_on_both(redis_url, scenario)


def test_secret_is_stored_only_as_its_hash(redis_url: str) -> None:
    async def scenario() -> None:
        client: Any = Redis.from_url(redis_url)
        prefix = f"test-{uuid.uuid4().hex[:8]}"
        store = RedisKeyStore(client, prefix=prefix)
        key, secret = await store.create(alias="a", team="t")
        dump: list[bytes] = []
        async for name in client.scan_iter(match=f"{prefix}:*"):
            dump.append(name)
            kind = await client.type(name)
            if kind == b"hash":
                dump += [x for kv in (await client.hgetall(name)).items() for x in kv]
            elif kind == b"set":
                dump += list(await client.smembers(name))
            else:
                dump.append(await client.get(name))
        blob = b"\n".join(dump)
        assert secret.encode() not in blob and secret[6:].encode() not in blob
        assert secret_hash(secret).encode() in blob and key.id.encode() in blob
        await client.aclose()

    asyncio.run(scenario())


def test_revocation_reaches_other_replicas_within_the_cache_ttl(redis_url: str) -> None:
    async def scenario() -> None:
        prefix = f"test-{uuid.uuid4().hex[:8]}"
        a_client, b_client = Redis.from_url(redis_url), Redis.from_url(redis_url)
        a, b = RedisKeyStore(a_client, prefix=prefix, cache_ttl_s=0.3), RedisKeyStore(b_client, prefix=prefix,
                                                                                       cache_ttl_s=0.3)
        key, secret = await a.create()
        assert (await b.authenticate(secret)).id == key.id  # now cached on B
        await a.revoke(key.id)
        with pytest.raises(AuthenticationFailed):
            await a.authenticate(secret)  # at once where revoked
        await asyncio.sleep(0.35)
        with pytest.raises(AuthenticationFailed):
            await b.authenticate(secret)  # within the TTL elsewhere
        await a_client.aclose()
        await b_client.aclose()

    asyncio.run(scenario())


def test_permissions() -> None:
    async def scenario() -> None:
        store = MemoryKeyStore()
        key, _ = await store.create(models=["cheap"], tiers=["economy"])
        check_allowed(key, "cheap")
        check_allowed(key, None, "economy")
        check_allowed(key, "cheap", "economy")
        for model, tier in (("pricey", None), (None, "premium"), ("pricey", "economy")):
            with pytest.raises(PermissionDenied) as info:
                check_allowed(key, model, tier)
            assert info.value.status_code == 403 and info.value.error_type == "permission_error"
        anything, _ = await store.create()
        check_allowed(anything, "pricey", "premium")
        nothing, _ = await store.create(models=[])
        with pytest.raises(PermissionDenied):
            check_allowed(nothing, "cheap")

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("usd", "pico"),
    [("10", 10**13), (10.1, 10_100_000_000_000), (Decimal("0.000000000001"), 1), (0, 0), ("1e3", 10**15)],
)
def test_budget_usd_to_pico_is_exact(usd: Any, pico: int) -> None:
    assert budget_pico_from_usd(usd) == pico


@pytest.mark.parametrize("usd", ["-1", "abc", "0.0000000000001", float("nan"), "inf"])
def test_bad_budget_usd(usd: Any) -> None:
    with pytest.raises(InvalidRequest):
        budget_pico_from_usd(usd)
