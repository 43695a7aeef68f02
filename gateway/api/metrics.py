"""GET /metrics: Prometheus text format (aggregated across workers in multiprocess mode); with
`metrics_require_key`, only for the master key or the scrape token."""

from __future__ import annotations

from fastapi import APIRouter
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response

from gateway.api.ops_auth import require_operator
from gateway.state import AppState

__all__ = ["router"]

router = APIRouter()


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    state: AppState = request.app.state.gw
    require_operator(request, state)
    return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
