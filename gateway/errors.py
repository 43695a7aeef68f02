"""The gateway's one error hierarchy; every error renders an OpenAI-shaped body.

    GatewayError                      (status, type, code)
    ├── InvalidRequest                400 invalid_request_error
    ├── AuthenticationFailed          401 authentication_error / invalid_api_key
    ├── PermissionDenied              403 permission_error
    ├── ModelNotFound                 404 invalid_request_error / model_not_found
    ├── NotFound                      404 invalid_request_error / not_found (admin objects)
    ├── MethodNotAllowed              405 invalid_request_error / method_not_allowed
    ├── RequestTooLarge               413 invalid_request_error / request_too_large
    ├── RateLimited                   429 rate_limit_exceeded  (retry-after)
    │   └── RateLimitExceeded         429 the key's own RPM/TPM limit (gateway-side, retry-after)
    ├── BudgetExceeded                429 budget_exceeded  (x-should-retry: false)
    ├── UpstreamError                 502 upstream_error
    ├── ServiceUnavailable            503 service_unavailable
    └── UpstreamTimeout               504 upstream_timeout

Upstream and litellm exceptions become these in `gateway.providers.errors`, nowhere else.
"""

from __future__ import annotations

from typing import Any

import orjson

__all__ = [
    "AuthenticationFailed",
    "BudgetExceeded",
    "GatewayError",
    "InvalidRequest",
    "MethodNotAllowed",
    "ModelNotFound",
    "NotFound",
    "PermissionDenied",
    "RateLimitExceeded",
    "RateLimited",
    "RequestTooLarge",
    "ServiceUnavailable",
    "UpstreamError",
    "UpstreamTimeout",
]


class GatewayError(Exception):
    status_code = 500
    error_type = "server_error"
    code: str | None = None
    # Metric label for upstream failures (bounded set); None for client-side errors.
    kind: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        kind: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        if kind is not None:
            self.kind = kind
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }

    def body_bytes(self) -> bytes:
        return orjson.dumps(self.body())

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status_code}, message={self.message!r})"


class InvalidRequest(GatewayError):
    status_code = 400
    error_type = "invalid_request_error"


class AuthenticationFailed(GatewayError):
    status_code = 401
    error_type = "authentication_error"
    code = "invalid_api_key"


class PermissionDenied(GatewayError):
    status_code = 403
    error_type = "permission_error"


class ModelNotFound(GatewayError):
    status_code = 404
    error_type = "invalid_request_error"
    code = "model_not_found"


class NotFound(GatewayError):
    status_code = 404
    error_type = "invalid_request_error"
    code = "not_found"


class MethodNotAllowed(GatewayError):
    status_code = 405
    error_type = "invalid_request_error"
    code = "method_not_allowed"


class RequestTooLarge(GatewayError):
    status_code = 413
    error_type = "invalid_request_error"
    code = "request_too_large"


class ClientGone(GatewayError):
    """The client closed the connection before its request was read: nobody to answer (the
    status is the ledger's and the metrics' convention for a client that left)."""

    status_code = 499
    error_type = "invalid_request_error"
    code = "client_closed_request"


class RateLimited(GatewayError):
    status_code = 429
    error_type = "rate_limit_exceeded"
    code = "rate_limit_exceeded"
    kind: str | None = "rate_limit"


class RateLimitExceeded(RateLimited):
    """A virtual key's own RPM/TPM limit (not an upstream failure, so no metric `kind`). Always
    carries `retry-after` (whole seconds, rounded up, at least 1)."""

    kind = None

    def __init__(self, message: str, *, retry_after_s: float, headers: dict[str, str] | None = None) -> None:
        seconds = max(1, -int(-retry_after_s // 1))  # ceil without floats drifting below 1
        super().__init__(message, headers={"retry-after": str(seconds), **(headers or {})})
        self.retry_after_s = retry_after_s


class BudgetExceeded(GatewayError):
    """The key's or its team's budget cannot cover this request's worst-case cost. Retrying will
    not help until the period ends or the budget is raised."""

    status_code = 429
    error_type = "budget_exceeded"
    code = "budget_exceeded"

    def __init__(self, message: str, *, param: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message, param=param, headers={"x-should-retry": "false", **(headers or {})})


class UpstreamError(GatewayError):
    status_code = 502
    error_type = "upstream_error"
    code = "upstream_error"
    kind = "server_error"


class ServiceUnavailable(GatewayError):
    status_code = 503
    error_type = "service_unavailable"
    code = "service_unavailable"


class UpstreamTimeout(GatewayError):
    status_code = 504
    error_type = "upstream_timeout"
    code = "upstream_timeout"
    kind: str | None = "timeout"


class DeadlineExceeded(UpstreamTimeout):
    """A tier's routing deadline passed before the next candidate was called: a 504 like any
    timeout, but no model's failure (no metric `kind`, no failure streak, no failover)."""

    kind = None
