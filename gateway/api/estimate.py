"""POST /v1/estimate: the routing decision and estimated cost for a chat request, without
calling any provider. Same body as /v1/chat/completions; the same code path ranks the
candidates, so the estimate's choice is what the real request then tries first."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse

from gateway.api.body import read_body
from gateway.pipeline.request import parse_chat_request
from gateway.state import AppState

__all__ = ["router"]

router = APIRouter()


@router.post("/v1/estimate")
async def estimate(request: Request) -> JSONResponse:
    state: AppState = request.app.state.gw
    chat = parse_chat_request(await read_body(request, state.settings.max_body_bytes))
    tier = state.router.tier(chat.model)
    if tier is None:
        return JSONResponse(await state.router.estimate(state.settings.resolve_model(chat.model), chat))
    plan = await state.router.plan(tier, chat)
    return JSONResponse(plan.describe())
