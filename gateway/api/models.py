"""GET /v1/models and /v1/models/{id}: every configured model (with availability, quality and
the endpoints that serve it) and every tier, in OpenAI's format. With `require_keys`, for
callers with a key only."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse

from gateway.api.ops_auth import require_caller
from gateway.errors import ModelNotFound
from gateway.state import AppState

__all__ = ["router"]

router = APIRouter()

CHAT_ENDPOINTS = ("/v1/chat/completions", "/v1/responses", "/v1/messages", "/v1/completions")
EMBEDDING_ENDPOINTS = ("/v1/embeddings",)


def _entries(state: AppState) -> list[dict[str, Any]]:
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
        entry["endpoints"] = list(EMBEDDING_ENDPOINTS if spec.mode == "embedding" else CHAT_ENDPOINTS)
        data.append(entry)
    for tier in state.settings.tiers.values():  # clients ask for a tier by using its name as `model`
        data.append({"id": tier.name, "object": "model", "created": 0, "owned_by": "gateway-tier",
                     "min_quality": tier.min_quality, "policy": tier.policy.name, "endpoints": list(CHAT_ENDPOINTS)})
    return data


@router.get("/v1/models")
async def list_models(request: Request) -> JSONResponse:
    state: AppState = request.app.state.gw
    await require_caller(request, state)
    return JSONResponse({"object": "list", "data": _entries(state)})


@router.get("/v1/models/{model_id:path}")
async def get_model(request: Request, model_id: str) -> JSONResponse:
    """One model or tier (ids may hold '/', as 'openrouter/...' ones do)."""
    state: AppState = request.app.state.gw
    await require_caller(request, state)
    found = next((e for e in _entries(state) if e["id"] == model_id), None)
    if found is None:
        raise ModelNotFound(f"The model or tier '{model_id}' does not exist", param="model")
    return JSONResponse(found)
