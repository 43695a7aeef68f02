"""What every endpoint reads off the HTTP request first: its id, the gateway's own request
headers, and its body (bounded)."""

from __future__ import annotations

import re
import uuid
from typing import NamedTuple

from starlette.requests import ClientDisconnect, Request

from gateway.errors import ClientGone, RequestTooLarge

__all__ = ["GatewayHeaders", "gateway_headers", "read_body", "request_id"]

_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class GatewayHeaders(NamedTuple):
    """The client's `x-gateway-*` request headers the pipeline reads (None: not sent)."""

    cache: str | None = None  # x-gateway-cache: the response cache's use for this request
    defer: str | None = None  # x-gateway-defer: `flex`, the request may wait


_NONE = GatewayHeaders()


def gateway_headers(request: Request) -> GatewayHeaders:
    """The `x-gateway-*` headers, read in one pass over the raw headers (most requests send none)."""
    cache = defer = None
    for name, value in request.scope["headers"]:
        if name.startswith(b"x-gateway-"):
            if name == b"x-gateway-cache":
                cache = value.decode("latin-1")
            elif name == b"x-gateway-defer":
                defer = value.decode("latin-1")
    return _NONE if cache is None and defer is None else GatewayHeaders(cache, defer)


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
