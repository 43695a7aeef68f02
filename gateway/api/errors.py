"""Render any failure as an OpenAI-shaped error response; installed on the FastAPI app and used
by the directly dispatched chat route alike."""

from __future__ import annotations

import uuid

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from gateway.errors import GatewayError, InvalidRequest
from gateway.observability.error_log import ErrorLog
from gateway.redaction import Redactor

__all__ = ["error_response", "install_error_handlers", "unexpected_error"]

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

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
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
