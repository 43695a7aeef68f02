"""`GET /admin/ledger?from=&to=&format=jsonl|csv`: the spend ledger's records for a range of UTC
days (both included; default the last 30), streamed page by page. Master key as for /admin."""

from __future__ import annotations

from types import MappingProxyType

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import StreamingResponse

from gateway.api.admin import admin_state, day_bounds, span
from gateway.errors import InvalidRequest
from gateway.ledger.report import export

__all__ = ["router"]

router = APIRouter()
_MEDIA = MappingProxyType({"jsonl": "application/x-ndjson", "csv": "text/csv; charset=utf-8"})


@router.get("/admin/ledger")
async def ledger_records(request: Request) -> StreamingResponse:
    state = admin_state(request)
    fmt = request.query_params.get("format", "jsonl")
    if fmt not in _MEDIA:
        raise InvalidRequest("format must be jsonl or csv", param="format")
    first, last = span(request)
    await state.ledger.flush()  # this process's newest records (other processes flush every interval)
    name = f"ledger-{first.isoformat()}-{last.isoformat()}.{fmt}"
    return StreamingResponse(export(state.ledger, *day_bounds(first, last), fmt), media_type=_MEDIA[fmt],
                             headers={"content-disposition": f'attachment; filename="{name}"'})
