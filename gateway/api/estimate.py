"""POST /v1/estimate: the routing decision and estimated cost for a chat request, without
calling any provider. Same body, same key checks and the same code path as
/v1/chat/completions, so the estimate's choice is what the real request then tries first; it
counts as one request against the key's RPM."""

from __future__ import annotations

from time import perf_counter

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.api.body import gateway_headers, read_body, request_id
from gateway.api.errors import error_response
from gateway.errors import GatewayError
from gateway.pipeline.exchange import Caller
from gateway.pipeline.request import parse_chat_request
from gateway.state import AppState

__all__ = ["router"]

router = APIRouter()


@router.post("/v1/estimate")
async def estimate(request: Request) -> Response:
    state: AppState = request.app.state.gw
    settings = state.settings
    rid = request.state.request_id = request_id(request)
    authorization = request.headers.get("authorization") or ""
    try:
        grant = await state.access.authenticate(authorization)
        chat = parse_chat_request(await read_body(request, settings.max_body_bytes),
                                  defer_header=gateway_headers(request).defer)
        return JSONResponse(await state.pipeline.estimate(chat, Caller(rid, grant, authorization, perf_counter())))
    except GatewayError as exc:
        return error_response(rid, exc, state.redact)
