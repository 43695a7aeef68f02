"""GET /v1/models: every configured model (with availability and quality) and every tier, in
OpenAI's list format. With `require_keys`, for callers with a key only."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse

from gateway.api.ops_auth import require_caller
from gateway.state import AppState

__all__ = ["router"]

router = APIRouter()


@router.get("/v1/models")
async def list_models(request: Request) -> JSONResponse:
    state: AppState = request.app.state.gw
    await require_caller(request, state)
    data: list[dict[str, Any]] = []
    for spec in state.settings.models.values():
        entry: dict[str, Any] = {
            "id": spec.name,
            "object": "model",
            "created": 0,
            "owned_by": spec.provider,
            "available": spec.available,
        }
        if spec.unavailable_reason:
            entry["unavailable_reason"] = spec.unavailable_reason
        entry["quality"] = spec.quality
        if spec.quality_by_category:
            entry["quality_by_category"] = dict(spec.quality_by_category)
        if spec.quality_source:
            entry["quality_source"] = spec.quality_source
        data.append(entry)
    for tier in state.settings.tiers.values():  # clients ask for a tier by using its name as `model`
        data.append({"id": tier.name, "object": "model", "created": 0, "owned_by": "gateway-tier",
                     "min_quality": tier.min_quality, "policy": tier.policy.name})
    return JSONResponse({"object": "list", "data": data})
