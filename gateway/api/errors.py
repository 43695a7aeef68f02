"""Render any failure as an OpenAI-shaped error response; installed on the FastAPI app and used
by the directly dispatched chat route alike. A request to a path the gateway does not serve is
also counted and logged (`UnknownPaths`), so operators see the clients that fail."""

from __future__ import annotations

import logging
import uuid

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from gateway.errors import GatewayError, InvalidRequest
from gateway.observability.error_log import ErrorLog
from gateway.observability.metrics import Metrics
from gateway.redaction import Redactor

__all__ = ["UnknownPaths", "error_response", "install_error_handlers", "unexpected_error"]

log = logging.getLogger("gateway.requests")

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"})
_MAX_PATH = 256  # characters of a path kept and logged


class UnknownPaths:
    """Requests to paths the gateway does not serve (the router's 404), so operators see clients
    failing: counted in `gateway_unknown_path_requests_total{method}` (never the path as a label)
    and logged at WARNING once per (method, path) per process. At most `remember` pairs are kept,
    the least recently seen forgotten first, so memory stays bounded whatever a scanner sends."""

    def __init__(self, redact: Redactor, remember: int = 1000) -> None:
        self._redact = redact
        self._remember = remember
        self._seen: dict[tuple[str, str], None] = {}  # (method, path), least recently seen first

    def record(self, metrics: Metrics | None, method: str, path: str) -> None:
        method = method if method in _METHODS else "OTHER"
        if metrics is not None:
            metrics.child(metrics.unknown_paths, method).inc()
        key, seen = (method, self._redact(path)[:_MAX_PATH]), self._seen  # (no credential kept, nor logged)
        if key in seen:
            del seen[key]  # moved to the most recently seen end
            seen[key] = None
            return
        if len(seen) >= self._remember:
            del seen[next(iter(seen))]
        seen[key] = None
        log.warning("request to a path the gateway does not serve: %s %r (answered 404; logged once per method "
                    "and path)", method, key[1])


def error_response(request_id: str | None, exc: GatewayError, redact: Redactor) -> Response:
    exc.message = redact(exc.message)
    headers = {"x-request-id": request_id or uuid.uuid4().hex, **exc.headers}
    if exc.status_code == 429 and exc.code == "budget_exceeded":
        headers["x-should-retry"] = "false"
    return Response(exc.body_bytes(), status_code=exc.status_code, media_type="application/json", headers=headers)


def unexpected_error(errors: ErrorLog, path: str, exc: BaseException) -> GatewayError:
    """What a client gets for a bug: a 500 that names nothing; the log gets the details."""
    errors.unexpected(path, exc)
    return GatewayError("internal gateway error")


def install_error_handlers(app: FastAPI, redact: Redactor, errors: ErrorLog) -> None:
    def rid(request: Request) -> str | None:
        return getattr(request.state, "request_id", None)

    async def on_gateway_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, GatewayError)
        return error_response(rid(request), exc, redact)

    unknown = app.state.unknown_paths = UnknownPaths(redact)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 404 and "endpoint" not in request.scope:  # no route matched: not one we serve
            gw = getattr(request.app.state, "gw", None)
            unknown.record(gw.metrics if gw is not None else None, request.method, request.scope["path"])
        err = GatewayError(str(exc.detail), code="not_found" if exc.status_code == 404 else None)
        err.status_code, err.error_type = exc.status_code, "invalid_request_error"
        return error_response(rid(request), err, redact)

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        return error_response(rid(request), InvalidRequest(str(exc)), redact)

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        return error_response(rid(request), unexpected_error(errors, request.url.path, exc), redact)

    app.add_exception_handler(GatewayError, on_gateway_error)
    app.add_exception_handler(HTTPException, on_http_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(Exception, on_unexpected)
