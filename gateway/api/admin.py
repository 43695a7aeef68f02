"""The admin API, authorised by `Authorization: Bearer <master_key>` (off when no master key is
configured): virtual keys (`/admin/keys`), team budgets (`/admin/teams`), spend aggregates
(`/admin/spend`: from the daily aggregates, or `source=ledger` from the spend ledger; both give
the same figures) and the spend forecast (`/admin/forecast`, `gateway/access/forecast.py`). And
`GET /v1/spend`, a caller's own key's budget position."""

from __future__ import annotations

import hmac
import math
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse

from gateway.access.budgets import Spend
from gateway.access.forecast import Forecast, forecast_keys, forecast_teams, live_keys, window_spend
from gateway.access.keys import Team, budget_pico_from_usd, clean_fields
from gateway.errors import AuthenticationFailed, InvalidRequest, NotFound
from gateway.ledger.report import spend_by
from gateway.ledger.spend_stats import GROUPS, aggregate
from gateway.money.pricing import PICO_PER_USD
from gateway.state import AppState

__all__ = ["admin_state", "day_bounds", "forecast_body", "router", "span"]

router = APIRouter()
_MAX_DAYS = 400


def _state(request: Request) -> AppState:
    return request.app.state.gw  # type: ignore[no-any-return]


def admin_state(request: Request) -> AppState:
    state = _state(request)
    master = state.settings.master_key
    if not master:
        raise NotFound("the admin API is off: configure master_key to enable it")
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), master.encode()):
        raise AuthenticationFailed("admin endpoints need 'Authorization: Bearer <master_key>'")
    return state


async def _json(request: Request) -> dict[str, Any]:
    try:
        body = orjson.loads(await request.body() or b"{}")
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object")
    return body


def _key_fields(body: dict[str, Any]) -> dict[str, Any]:
    """API fields -> store fields: `budget_usd` (exact decimal) becomes integer `budget_pico`."""
    fields = dict(body)
    if "budget_usd" in fields:
        usd = fields.pop("budget_usd")
        fields["budget_pico"] = None if usd is None else budget_pico_from_usd(usd)
    return clean_fields(fields)


def _usd(pico: int | None) -> float | None:
    return None if pico is None else pico / PICO_PER_USD


def _spend_body(spend: Spend) -> dict[str, Any]:
    return {"spend_usd": _usd(spend.spent), "reserved_usd": _usd(spend.reserved), "budget_usd": _usd(spend.budget),
            "remaining_usd": _usd(spend.remaining),
            "period_end": spend.period_end.isoformat() if spend.period_end else None}


@router.post("/admin/keys")
async def create_key(request: Request) -> JSONResponse:
    state = admin_state(request)
    key, secret = await state.access.keys.create(**_key_fields(await _json(request)))
    return JSONResponse({**key.public(), "key": secret}, status_code=201)


@router.get("/admin/keys")
async def list_keys(request: Request) -> JSONResponse:
    state = admin_state(request)
    return JSONResponse({"data": [k.public() for k in await state.access.keys.list()]})


@router.get("/admin/keys/{key_id}")
async def get_key(request: Request, key_id: str) -> JSONResponse:
    key = await admin_state(request).access.keys.get(key_id)
    if key is None:
        raise NotFound(f"no key '{key_id}'")
    return JSONResponse(key.public())


@router.patch("/admin/keys/{key_id}")
async def update_key(request: Request, key_id: str) -> JSONResponse:
    state = admin_state(request)
    return JSONResponse((await state.access.keys.update(key_id, **_key_fields(await _json(request)))).public())


@router.delete("/admin/keys/{key_id}")
async def revoke_key(request: Request, key_id: str) -> JSONResponse:
    return JSONResponse((await admin_state(request).access.keys.revoke(key_id)).public())


@router.put("/admin/teams/{name}")
async def set_team(request: Request, name: str) -> JSONResponse:
    state = admin_state(request)
    body = await _json(request)
    unknown = sorted(set(body) - {"budget_usd", "budget_period"})
    if unknown:
        raise InvalidRequest(f"unknown team field {unknown[0]!r}", param=unknown[0])
    usd = body.get("budget_usd")
    try:
        team = Team(name=name, budget_pico=None if usd is None else budget_pico_from_usd(usd),
                    budget_period=body.get("budget_period", "total"))
    except ValueError as exc:
        raise InvalidRequest(str(exc), param="budget_period") from None
    await state.access.keys.set_team(team)
    return JSONResponse(await _team_body(state, team))


@router.get("/admin/teams")
async def list_teams(request: Request) -> JSONResponse:
    state = admin_state(request)
    return JSONResponse({"data": [await _team_body(state, t) for t in await state.access.keys.list_teams()]})


async def _team_body(state: AppState, team: Team) -> dict[str, Any]:
    spend = await state.access.budgets.team_spend(team)
    return {"name": team.name, "budget_period": team.budget_period, **_spend_body(spend)}


def _day(value: str | None, default: date, name: str) -> date:
    if value is None:
        return default
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidRequest(f"{name} must be a date like 2026-11-26", param=name) from None


def span(request: Request) -> tuple[date, date]:
    """The `from` and `to` days (UTC, both included); by default the last 30 days."""
    today = datetime.now(UTC).date()
    last = _day(request.query_params.get("to"), today, "to")
    first = _day(request.query_params.get("from"), last - timedelta(days=29), "from")
    if first > last or (last - first).days >= _MAX_DAYS:
        raise InvalidRequest(f"from must be on or before to, at most {_MAX_DAYS} days apart", param="from")
    return first, last


def day_bounds(first: date, last: date) -> tuple[datetime, datetime]:
    """[start of `first`, end of `last`) in UTC."""
    start = datetime(first.year, first.month, first.day, tzinfo=UTC)
    return start, start + timedelta(days=(last - first).days + 1)


@router.get("/admin/spend")
async def admin_spend(request: Request) -> JSONResponse:
    state = admin_state(request)
    group_by = request.query_params.get("group_by", "model")
    if group_by not in GROUPS:
        raise InvalidRequest(f"group_by must be one of {', '.join(GROUPS)}", param="group_by")
    source = request.query_params.get("source", "stats")
    if source not in ("stats", "ledger"):
        raise InvalidRequest("source must be stats or ledger", param="source")
    first, last = span(request)
    if source == "ledger":
        await state.ledger.flush()  # this process's newest records (other processes flush every interval)
        groups = await spend_by(state.ledger, *day_bounds(first, last), group_by)
    else:
        groups = aggregate(await state.stats.days(first, last), group_by)
    return JSONResponse({
        "group_by": group_by, "source": source, "from": first.isoformat(), "to": last.isoformat(),
        "data": [{"group": g, "spend_usd": p / PICO_PER_USD} for g, p in groups.items()],
        "total_usd": sum(groups.values()) / PICO_PER_USD if group_by in ("model", "day") else None,
    })


def forecast_body(forecast: Forecast) -> dict[str, Any]:
    """A forecast's figures in USD (as /admin/spend's); `exhaustion_seconds` and
    `projected_exhaustion_at` are null when the budget never runs out at this rate (or there is none)."""
    spend, exhaustion, at = forecast.spend, forecast.exhaustion_s, forecast.exhaustion_at
    return {
        "budget_usd": _usd(spend.budget), "spent_usd": _usd(spend.spent), "reserved_usd": _usd(spend.reserved),
        "remaining_usd": _usd(spend.remaining), "window_spend_usd": _usd(forecast.window_pico),
        "burn_rate_usd_per_hour": _usd(forecast.rate_pico_per_hour),
        "projected_period_spend_usd": _usd(forecast.projected_period_pico),
        "period_end": spend.period_end.isoformat() if spend.period_end else None,
        "projected_exhaustion_at": at.isoformat() if at else None,
        "exhaustion_seconds": exhaustion if math.isfinite(exhaustion) else None,
        "runs_out_before_period_end": forecast.runs_out_before_period_end,
    }


@router.get("/admin/forecast")
async def admin_forecast(request: Request) -> JSONResponse:
    """Per team and key: the burn rate over the last `budgets.forecast_window_s` and where it leads by
    the period's end; `?team=` (that team and its keys), `?key_id=` (that key and its team)."""
    state = admin_state(request)
    team, key_id = request.query_params.get("team"), request.query_params.get("key_id")
    window_s = state.settings.budgets.forecast_window_s
    await state.ledger.flush()  # this process's newest records (other processes flush every interval)
    now = datetime.now(UTC)
    window = await window_spend(state.ledger, now, window_s)
    keys = sorted((k for k in live_keys(await state.access.keys.list(), now)
                   if (key_id is None or k.id == key_id) and (team is None or k.team == team)),
                  key=lambda k: (k.team or "", k.alias or "", k.id))
    names = {k.team for k in keys} if key_id is not None else None
    teams = sorted((t for t in await state.access.keys.list_teams()
                    if (team is None or t.name == team) and (names is None or t.name in names)),
                   key=lambda t: t.name)
    budgets = state.access.budgets
    return JSONResponse({
        "window_s": window_s, "generated_at": now.isoformat(),
        "teams": [{"team": t.name, "budget_period": t.budget_period, **forecast_body(f)}
                  for t, f in await forecast_teams(teams, budgets, window, window_s, now)],
        "keys": [{"key_id": k.id, "alias": k.alias, "team": k.team, "budget_period": k.budget_period,
                  **forecast_body(f)} for k, f in await forecast_keys(keys, budgets, window, window_s, now)],
    })


@router.get("/v1/spend")
async def own_spend(request: Request) -> JSONResponse:
    state = _state(request)
    grant = await state.access.authenticate(request.headers.get("authorization"))
    if grant.key is None:
        raise AuthenticationFailed("GET /v1/spend needs a gateway key: 'Authorization: Bearer sk-gw-...'")
    body = {"key_id": grant.key.id, "budget_period": grant.key.budget_period,
            **_spend_body(await state.access.budgets.spend(grant.key))}
    if grant.team is not None and grant.team.budget_pico is not None:
        body["team"] = {"name": grant.team.name, **_spend_body(await state.access.budgets.team_spend(grant.team))}
    return JSONResponse(body)
