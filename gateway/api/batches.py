"""OpenAI's Files and Batch APIs for batches of chat completions (`gateway/batches/`,
docs/batches.md): `POST|GET /v1/files`, `GET|DELETE /v1/files/{id}`, `GET
/v1/files/{id}/content`, `POST|GET /v1/batches`, `GET /v1/batches/{id}`, `POST
/v1/batches/{id}/cancel`. The caller is authenticated as on every /v1 route (a gateway key, or
any bearer token when keys are not required); each batch and file is its owner's only (another
key gets 404). Errors in OpenAI's shape."""

from __future__ import annotations

from time import perf_counter
from typing import Any

import orjson
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from gateway.api.body import read_body, request_id
from gateway.batches.multipart import parse_form
from gateway.batches.service import BatchService
from gateway.errors import InvalidRequest, NotFound
from gateway.pipeline.exchange import Caller
from gateway.pipeline.request import decode_object

__all__ = ["router"]

router = APIRouter()
_FORM_OVERHEAD = 64 * 1024  # the multipart framing around the file


async def _open(request: Request) -> tuple[BatchService, Caller]:
    """The batch service and the authenticated caller (404 when batches are off)."""
    state = request.app.state.gw
    rid = request.state.request_id = request_id(request)
    service: BatchService | None = state.batches
    if service is None or not state.settings.batches.enabled:
        raise NotFound("the Batch API is off on this gateway (batches.enabled)")
    authorization = request.headers.get("authorization") or ""
    grant = await state.access.authenticate(authorization)
    return service, Caller(rid, grant, authorization, perf_counter())


def _json(body: dict[str, Any], caller: Caller) -> Response:
    return Response(orjson.dumps(body), media_type="application/json",
                    headers={"x-request-id": caller.request_id})


def _limit(request: Request, default: int, most: int) -> int:
    raw = request.query_params.get("limit")
    if raw is None:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= most:
        raise InvalidRequest(f"'limit' must be an integer from 1 to {most}", param="limit")
    return int(raw)


@router.post("/v1/files")
async def upload_file(request: Request) -> Response:
    service, caller = await _open(request)
    limit = request.app.state.gw.settings.batches.max_file_bytes + _FORM_OVERHEAD
    form = parse_form(request.headers.get("content-type") or "", await read_body(request, limit))
    return _json(await service.upload(caller, form), caller)


@router.get("/v1/files")
async def list_files(request: Request) -> Response:
    service, caller = await _open(request)
    body = await service.files(caller, request.query_params.get("purpose"), _limit(request, 10_000, 10_000))
    return _json(body, caller)


@router.get("/v1/files/{file_id}")
async def get_file(request: Request, file_id: str) -> Response:
    service, caller = await _open(request)
    return _json((await service.file(caller, file_id)).to_openai(), caller)


@router.delete("/v1/files/{file_id}")
async def delete_file(request: Request, file_id: str) -> Response:
    service, caller = await _open(request)
    return _json(await service.delete_file(caller, file_id), caller)


@router.get("/v1/files/{file_id}/content")
async def file_content(request: Request, file_id: str) -> Response:
    service, caller = await _open(request)
    return Response(await service.content(caller, file_id), media_type="application/octet-stream",
                    headers={"x-request-id": caller.request_id})


@router.post("/v1/batches")
async def create_batch(request: Request) -> Response:
    service, caller = await _open(request)
    body = decode_object(await read_body(request, request.app.state.gw.settings.max_body_bytes))
    return _json((await service.create(caller, body)).to_openai(), caller)


@router.get("/v1/batches")
async def list_batches(request: Request) -> Response:
    service, caller = await _open(request)
    return _json(await service.batches(caller, request.query_params.get("after"), _limit(request, 20, 100)), caller)


@router.get("/v1/batches/{batch_id}")
async def get_batch(request: Request, batch_id: str) -> Response:
    service, caller = await _open(request)
    return _json((await service.batch(caller, batch_id)).to_openai(), caller)


@router.post("/v1/batches/{batch_id}/cancel")
async def cancel_batch(request: Request, batch_id: str) -> Response:
    service, caller = await _open(request)
    return _json((await service.cancel(caller, batch_id)).to_openai(), caller)
