"""GET /healthz (the process is alive) and GET /readyz (it can serve traffic: 200 or 503). The
reasons and figures behind /readyz are shown to operators only when `metrics_require_key` is on
(a probe reads the status code).

/readyz also warns (without failing) when the Redis that holds keys, budgets and counters may
evict keys when full: any `maxmemory-policy` but `noeviction` (`volatile-*` too, since period
counters and holds carry TTLs). The policy is read once per process (`CONFIG GET`, again only
after Redis did not answer); a Redis that refuses CONFIG is reported as not checked.
And (without failing) when the spend ledger's store is behind: records in its local journal, or
more queued than `ledger.behind_records`."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse

from gateway.api.ops_auth import is_operator
from gateway.runtime.redis_errors import redis_errors
from gateway.state import AppState

__all__ = ["router"]

log = logging.getLogger("gateway")
router = APIRouter()


@router.get("/healthz")
async def healthz() -> JSONResponse:
    return JSONResponse({"status": "ok"})


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    state: AppState = request.app.state.gw
    available = sum(1 for m in state.settings.models.values() if m.available)
    problems = [] if available else ["no model is available: set a provider API key"]
    warnings: list[str] = []
    if state.redis is not None:
        try:
            await state.redis.ping()
        except redis_errors() as exc:
            problems.append(f"redis: {type(exc).__name__}")
        warnings += await _eviction_warnings(request.app.state, state.redis)
    warnings += _ledger_warnings(state) + _spend_warnings(state)
    detailed = not state.settings.metrics_require_key or is_operator(request, state)
    extra = {"warnings": warnings} if detailed and warnings else {}
    if problems:
        return JSONResponse({"status": "not_ready", **({"problems": problems, **extra} if detailed else {})},
                            status_code=503)
    return JSONResponse({"status": "ready", **({"models_available": available, **extra} if detailed else {})})


async def _eviction_warnings(app_state: Any, redis: Any) -> list[str]:
    """The warning about the money Redis's eviction policy, read the first time it answers and
    kept on the app's state (logged once)."""
    checked: list[str] | None = getattr(app_state, "redis_eviction_warnings", None)
    if checked is not None:
        return checked
    from redis.exceptions import ResponseError

    try:
        policy = (await redis.config_get("maxmemory-policy")).get("maxmemory-policy")
    except ResponseError as exc:  # CONFIG renamed away or not permitted (managed Redis)
        checked = [f"redis: could not check maxmemory-policy ({exc}); it must be noeviction, or keys, budgets "
                   "and counters may be evicted when Redis is full"]
    except redis_errors():
        return []  # not answering: reported above, checked next time
    else:
        checked = _policy_warnings(policy)
    for warning in checked:
        log.warning("%s", warning)
    app_state.redis_eviction_warnings = checked
    return checked


def _policy_warnings(policy: str | None) -> list[str]:
    if policy == "noeviction":
        return []
    if policy is None:
        return ["redis: could not check maxmemory-policy (CONFIG GET gave nothing); it must be noeviction"]
    return [f"redis: maxmemory-policy is {policy}: when full, Redis may evict keys, budgets, holds and period "
            "counters (a budget bypass); set noeviction (the caches keep their own bound, or use cache.redis_url)"]


def _spend_warnings(state: AppState) -> list[str]:
    """Settled spend not yet in the system of record (PostgreSQL down, or a long queue): budgets
    keep working from Redis meanwhile; the journal keeps every settlement until it is written."""
    queued, journaled = state.access.budgets.backlog()
    metrics = state.metrics
    metrics.child(metrics.ledger_backlog, "spend_queue").set(queued)
    metrics.child(metrics.ledger_backlog, "spend_journal").set(journaled)
    if journaled or queued > state.settings.ledger.behind_records:
        return [f"settled spend: behind ({queued} settlement(s) queued, {journaled} in the local journal)"]
    return []


def _ledger_warnings(state: AppState) -> list[str]:
    """The spend ledger's store is behind: records in the local journal (PostgreSQL down), or more
    queued than `ledger.behind_records`. A warning, not a reason to leave service: requests never
    wait for the ledger, and the journal keeps every record until the store takes it."""
    queued, journaled = state.ledger.backlog()
    if journaled or queued > state.settings.ledger.behind_records:
        return [f"ledger: behind ({queued} record(s) queued, {journaled} in the local journal)"]
    return []
