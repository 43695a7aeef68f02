"""What every endpoint reads off the HTTP request first: its id and its body (bounded)."""

from __future__ import annotations

import re
import uuid

from starlette.requests import ClientDisconnect, Request

from gateway.errors import ClientGone, RequestTooLarge

__all__ = ["read_body", "request_id"]

_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def request_id(request: Request) -> str:
    """The client's own x-request-id if it sent a safe one, else a new one."""
    given = request.headers.get("x-request-id")
    return given if given and _SAFE_ID.match(given) else uuid.uuid4().hex


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing anything over `limit` bytes (413) without reading it all. (A
    body too slow to arrive is the server's to cut off: `api/http_server.py`.)"""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestTooLarge(f"request body is {declared} bytes; the limit is {limit}")
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise RequestTooLarge(f"request body exceeds the limit of {limit} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        raise ClientGone("the client went away before its request body arrived") from None
    return b"".join(chunks)
