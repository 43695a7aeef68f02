"""The one boundary where upstream, aiohttp and litellm failures become GatewayErrors.

Upstream 400/413/422 are the client's fault and stay 400; upstream 401/403/404 mean the
gateway's own credentials or model ids are wrong, so the client sees 502; 429 stays 429 with
the upstream's retry-after; timeouts are 504; everything else is 502. Messages are redacted:
no upstream key ever reaches a client or a log line.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import orjson

from gateway.config.settings import ModelSpec
from gateway.errors import GatewayError, InvalidRequest, RateLimited, UpstreamError, UpstreamTimeout
from gateway.providers.upstream_http import UpstreamConnectError, UpstreamDisconnected, UpstreamProtocolError
from gateway.redaction import redact

__all__ = ["bad_response", "error_from_event", "status_error", "upstream_errors"]

_MAX_MESSAGE = 500


def _upstream_message(raw: bytes) -> str:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw[:200].decode("utf-8", "replace")
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return str(err["message"])
        if isinstance(err, str):
            return err
    return ""


def status_error(model: ModelSpec, status: int, raw: bytes, headers: Mapping[str, str]) -> GatewayError:
    """Translate a non-2xx upstream answer."""
    detail = redact(_upstream_message(raw), [model.api_key or ""])[:_MAX_MESSAGE]
    where = f"upstream {model.provider} returned {status} for model '{model.name}'"
    text = f"{where}: {detail}" if detail else where
    if status in (400, 413, 422):
        return InvalidRequest(text, kind="client_error")
    if status in (401, 403):
        return UpstreamError(f"{where}: the gateway's credentials were rejected", kind="auth")
    if status == 429:
        retry = {"retry-after": headers["retry-after"]} if "retry-after" in headers else None
        return RateLimited(text, headers=retry)
    if status in (408, 504, 524):
        return UpstreamTimeout(text)
    return UpstreamError(text, kind="client_error" if status < 500 else "server_error")


def _from_litellm(model: ModelSpec, exc: Exception) -> GatewayError | None:
    status = getattr(exc, "status_code", None)
    if not isinstance(status, int) or type(exc).__module__.split(".")[0] not in ("litellm", "openai"):
        return None
    message = str(getattr(exc, "message", "") or exc)
    headers: dict[str, str] = {}
    response = getattr(exc, "response", None)
    if response is not None and "retry-after" in getattr(response, "headers", {}):
        headers["retry-after"] = str(response.headers["retry-after"])
    return status_error(model, status, orjson.dumps({"error": {"message": message}}), headers)


@contextmanager
def upstream_errors(model: ModelSpec) -> Iterator[None]:
    """Wrap every await on an upstream; re-raise failures as GatewayErrors."""
    try:
        yield
    except GatewayError:
        raise
    except TimeoutError as exc:
        raise UpstreamTimeout(
            f"upstream {model.provider} timed out after {model.timeout_s:g}s for model '{model.name}'"
        ) from exc
    except UpstreamConnectError as exc:
        message = f"cannot reach upstream {model.provider} for model '{model.name}'"
        raise UpstreamError(message, kind="connection") from exc
    except UpstreamDisconnected as exc:
        raise UpstreamError(
            f"upstream {model.provider} connection broke for model '{model.name}'", kind="connection"
        ) from exc
    except (UpstreamProtocolError, orjson.JSONDecodeError, UnicodeDecodeError, zlib.error) as exc:
        raise UpstreamError(
            f"upstream {model.provider} sent a malformed response for model '{model.name}'", kind="bad_response"
        ) from exc
    except Exception as exc:
        mapped = _from_litellm(model, exc)
        if mapped is None:
            raise
        raise mapped from exc


def bad_response(model: ModelSpec, what: str) -> UpstreamError:
    return UpstreamError(
        f"upstream {model.provider} sent a malformed response for model '{model.name}': {what}",
        kind="bad_response",
    )


def error_from_event(model: ModelSpec, event: Any) -> UpstreamError:
    """An error object received inside an upstream stream."""
    err = event.get("error") if isinstance(event, dict) else None
    message = err.get("message") if isinstance(err, dict) else None
    detail = redact(str(message or "unknown error"), [model.api_key or ""])[:_MAX_MESSAGE]
    return UpstreamError(f"upstream {model.provider} failed mid-stream for model '{model.name}': {detail}")
