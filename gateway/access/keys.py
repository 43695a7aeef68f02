"""Virtual keys: the gateway keys clients present, and the teams they belong to.

A secret looks like `sk-gw-<43 url-safe random characters>`. It is returned once, by `create`,
and never stored: stores keep only its SHA-256 (`secret_hash`) and look keys up by that hash.
The key's `id` is random too, not derived from the secret, so ids can be shown and logged.

`models` / `tiers` of None mean "any"; an empty tuple means "none". A key restricted to some
models may still ask for an allowed tier: routing must then only consider the key's models
(`model_allowed` filters the candidates).

Budgets are integer pico-USD (`budget_pico`, see gateway.money.pricing); None means no budget.
"""

from __future__ import annotations

import builtins
import dataclasses
import hashlib
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

from gateway.access.periods import Period, check_period
from gateway.errors import AuthenticationFailed, InvalidRequest, NotFound, PermissionDenied
from gateway.money.pricing import PICO_PER_USD

__all__ = [
    "EDITABLE_FIELDS",
    "SECRET_PREFIX",
    "KeyStore",
    "MemoryKeyStore",
    "Team",
    "VirtualKey",
    "budget_pico_from_usd",
    "check_allowed",
    "check_usable",
    "clean_fields",
    "model_allowed",
    "new_key",
    "secret_hash",
]

SECRET_PREFIX = "sk-gw-"
EDITABLE_FIELDS = frozenset(
    {"alias", "team", "user", "models", "tiers", "budget_pico", "budget_period", "rpm", "tpm", "expires_at"}
)


@dataclass(frozen=True, slots=True, kw_only=True)
class VirtualKey:
    id: str
    created_at: datetime
    alias: str | None = None
    team: str | None = None
    user: str | None = None
    models: tuple[str, ...] | None = None
    tiers: tuple[str, ...] | None = None
    budget_pico: int | None = None  # integer pico-USD; None = no budget
    budget_period: Period = "total"
    rpm: int | None = None
    tpm: int | None = None
    expires_at: datetime | None = None
    revoked: bool = False

    def public(self) -> dict[str, Any]:
        """JSON-ready fields for the admin API; never contains the secret (it is not here)."""
        out = dataclasses.asdict(self)
        for name in ("created_at", "expires_at"):
            out[name] = out[name].isoformat() if out[name] is not None else None
        for name in ("models", "tiers"):
            out[name] = list(out[name]) if out[name] is not None else None
        out["budget_usd"] = self.budget_pico / PICO_PER_USD if self.budget_pico is not None else None
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class Team:
    name: str
    budget_pico: int | None = None
    budget_period: Period = "total"

    def __post_init__(self) -> None:
        check_period(self.budget_period)
        if self.budget_pico is not None and (isinstance(self.budget_pico, bool) or self.budget_pico < 0):
            raise ValueError("a team's budget_pico must be an integer >= 0")


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def budget_pico_from_usd(value: str | int | float | Decimal) -> int:
    """An exact USD amount (e.g. the admin API's `budget_usd`) as integer pico-USD. Floats go
    through their shortest decimal form (`10.1` is exactly $10.10). Finer than 1e-12 is refused."""
    try:
        usd = Decimal(str(value)) if not isinstance(value, Decimal) else value
    except InvalidOperation as exc:
        raise InvalidRequest("budget_usd must be a number", param="budget_usd") from exc
    pico = usd * PICO_PER_USD
    if not usd.is_finite() or usd < 0 or pico != pico.to_integral_value():
        raise InvalidRequest("budget_usd must be >= 0 with at most 12 decimals", param="budget_usd")
    return int(pico)


def _names(name: str, value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, Iterable) or not all(isinstance(v, str) for v in value):
        raise InvalidRequest(f"{name} must be a list of strings", param=name)
    return tuple(value)


def _when(name: str, value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        when = value
    elif isinstance(value, str):
        try:
            when = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as exc:
            raise InvalidRequest(f"{name} must be an ISO 8601 date-time", param=name) from exc
    else:
        raise InvalidRequest(f"{name} must be an ISO 8601 date-time", param=name)
    if when is not None and when.tzinfo is None:
        raise InvalidRequest(f"{name} must carry a time zone (e.g. 'Z')", param=name)
    return when.astimezone(UTC) if when is not None else None


def _count(name: str, value: Any, minimum: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidRequest(f"{name} must be an integer >= {minimum}", param=name)
    return value


def _text(name: str, value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise InvalidRequest(f"{name} must be a string", param=name)
    return value


def clean_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Validate editable key fields (as given to `create` / `update`); InvalidRequest names the
    first bad one."""
    unknown = sorted(set(fields) - EDITABLE_FIELDS)
    if unknown:
        raise InvalidRequest(f"unknown key field {unknown[0]!r}", param=unknown[0])
    out: dict[str, Any] = {}
    for name, value in fields.items():
        if name in ("models", "tiers"):
            out[name] = _names(name, value)
        elif name == "expires_at":
            out[name] = _when(name, value)
        elif name == "budget_pico":
            out[name] = _count(name, value, 0)
        elif name in ("rpm", "tpm"):
            out[name] = _count(name, value, 1)
        elif name == "budget_period":
            try:
                out[name] = check_period(value)
            except ValueError as exc:
                raise InvalidRequest(str(exc), param=name) from exc
        else:
            out[name] = _text(name, value)
    return out


def new_key(fields: Mapping[str, Any], now: datetime | None = None) -> tuple[VirtualKey, str]:
    """A fresh key and its secret (the only time the secret exists)."""
    key = VirtualKey(
        id=f"key-{secrets.token_hex(8)}", created_at=now or datetime.now(UTC), **clean_fields(fields)
    )
    return key, SECRET_PREFIX + secrets.token_urlsafe(32)


def check_usable(key: VirtualKey | None, now: datetime | None = None) -> VirtualKey:
    """The key if it exists, is not revoked and has not expired; else AuthenticationFailed (401).
    Messages never repeat the presented secret."""
    if key is None:
        raise AuthenticationFailed("Invalid API key. Present a gateway key as 'Authorization: Bearer sk-gw-...'.")
    if key.revoked:
        raise AuthenticationFailed(f"API key {key.id} has been revoked.")
    if key.expires_at is not None and key.expires_at <= (now or datetime.now(UTC)):
        raise AuthenticationFailed(f"API key {key.id} expired at {key.expires_at.isoformat()}.")
    return key


def model_allowed(key: VirtualKey, model: str) -> bool:
    return key.models is None or model in key.models


def check_allowed(key: VirtualKey, model: str | None, tier: str | None = None) -> None:
    """PermissionDenied (403) unless the key may use `tier` (when the request names a tier) and
    `model` (the model asked for, or the one routing chose). A key restricted to tiers may name
    a model only if its `models` list it."""
    if tier is not None and key.tiers is not None and tier not in key.tiers:
        raise PermissionDenied(f"API key {key.id} is not allowed to use tier '{tier}'.", param="model")
    if tier is None and model is not None and key.tiers is not None and (key.models is None or model not in key.models):
        raise PermissionDenied(f"API key {key.id} may only use the tiers {', '.join(key.tiers)}, not the model "
                               f"'{model}' by name.", param="model")
    if model is not None and not model_allowed(key, model):
        raise PermissionDenied(f"API key {key.id} is not allowed to use model '{model}'.", param="model")


class KeyStore(Protocol):
    async def create(self, **fields: Any) -> tuple[VirtualKey, str]:
        """(key, secret): the secret is shown once and stored only as its hash."""
        ...

    async def get(self, key_id: str) -> VirtualKey | None: ...

    async def list(self) -> list[VirtualKey]: ...

    async def update(self, key_id: str, **changes: Any) -> VirtualKey:
        """Change some editable fields; NotFound for an unknown id."""
        ...

    async def revoke(self, key_id: str) -> VirtualKey:
        """Refused by `authenticate` from now on (on every replica within the cache TTL)."""
        ...

    async def authenticate(self, secret: str) -> VirtualKey:
        """The usable key for a presented secret, else AuthenticationFailed."""
        ...

    async def set_team(self, team: Team) -> None: ...

    async def get_team(self, name: str) -> Team | None: ...

    async def list_teams(self) -> builtins.list[Team]: ...

    async def run(self) -> None:
        """Background upkeep until cancelled (re-syncing a cache with the record); returns at once
        when there is none."""
        ...


class MemoryKeyStore:
    """Keys for one process (no Redis)."""

    def __init__(self) -> None:
        self._keys: dict[str, VirtualKey] = {}
        self._by_hash: dict[str, str] = {}
        self._teams: dict[str, Team] = {}

    async def create(self, **fields: Any) -> tuple[VirtualKey, str]:
        key, secret = new_key(fields)
        self._keys[key.id] = key
        self._by_hash[secret_hash(secret)] = key.id
        return key, secret

    async def get(self, key_id: str) -> VirtualKey | None:
        return self._keys.get(key_id)

    async def list(self) -> list[VirtualKey]:
        return sorted(self._keys.values(), key=lambda k: (k.created_at, k.id))

    async def update(self, key_id: str, **changes: Any) -> VirtualKey:
        return self._replace(key_id, clean_fields(changes))

    async def revoke(self, key_id: str) -> VirtualKey:
        return self._replace(key_id, {"revoked": True})

    def _replace(self, key_id: str, changes: dict[str, Any]) -> VirtualKey:
        if key_id not in self._keys:
            raise NotFound(f"no key with id {key_id!r}")
        key = self._keys[key_id] = dataclasses.replace(self._keys[key_id], **changes)
        return key

    async def authenticate(self, secret: str) -> VirtualKey:
        key_id = self._by_hash.get(secret_hash(secret)) if secret.startswith(SECRET_PREFIX) else None
        return check_usable(self._keys.get(key_id) if key_id else None)

    async def set_team(self, team: Team) -> None:
        self._teams[team.name] = team

    async def get_team(self, name: str) -> Team | None:
        return self._teams.get(name)

    async def list_teams(self) -> builtins.list[Team]:
        return sorted(self._teams.values(), key=lambda t: t.name)

    async def run(self) -> None:
        return None
