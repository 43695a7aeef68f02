"""GET /healthz (the process is alive) and GET /readyz (it can serve traffic: 200 or 503). The
reasons and figures behind /readyz are shown to operators only when `metrics_require_key` is on
(a probe reads the status code)."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse

from gateway.api.ops_auth import is_operator
from gateway.runtime.redis_errors import redis_errors
from gateway.state import AppState

__all__ = ["router"]

router = APIRouter()


@router.get("/healthz")
async def healthz() -> JSONResponse:
    return JSONResponse({"status": "ok"})


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    state: AppState = request.app.state.gw
    available = sum(1 for m in state.settings.models.values() if m.available)
    problems = [] if available else ["no model is available: set a provider API key"]
    if state.redis is not None:
        try:
            await state.redis.ping()
        except redis_errors() as exc:
            problems.append(f"redis: {type(exc).__name__}")
    detailed = not state.settings.metrics_require_key or is_operator(request, state)
    if problems:
        return JSONResponse({"status": "not_ready", **({"problems": problems} if detailed else {})}, status_code=503)
    return JSONResponse({"status": "ready", **({"models_available": available} if detailed else {})})
