"""Who may read the operational endpoints: `/metrics` (team names, spend) and a detailed
`/readyz` need the master key or the scrape token (`metrics_token`) when `metrics_require_key`
is on (by default it follows `require_keys`); `/v1/models` needs a virtual key or the master
key when `require_keys` is on."""

from __future__ import annotations

import hmac

from starlette.requests import Request

from gateway.errors import AuthenticationFailed
from gateway.state import AppState

__all__ = ["bearer", "is_operator", "require_caller", "require_operator"]


def bearer(request: Request) -> str:
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return given.strip() if scheme.lower() == "bearer" else ""


def is_operator(request: Request, state: AppState) -> bool:
    """Whether the request carries the master key or the scrape token."""
    given = bearer(request).encode()
    settings = state.settings
    return bool(given) and any(hmac.compare_digest(given, token.encode())
                               for token in (settings.master_key, settings.metrics_token) if token)


def require_operator(request: Request, state: AppState) -> None:
    if state.settings.metrics_require_key and not is_operator(request, state):
        raise AuthenticationFailed("this endpoint needs 'Authorization: Bearer <master_key or metrics_token>'")


async def require_caller(request: Request, state: AppState) -> None:
    """With `require_keys`: a valid virtual key, or the master key."""
    if not state.settings.require_keys:
        return
    given = bearer(request)
    master = state.settings.master_key
    if master and hmac.compare_digest(given.encode(), master.encode()):
        return
    await state.access.authenticate(request.headers.get("authorization"))
