"""What the HTTP adapters share: prepared endpoints per model, a POST that checks the status,
and error translation around every await on the upstream."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from gateway.config.settings import ModelSpec
from gateway.errors import DeadlineExceeded
from gateway.providers.errors import status_error, upstream_errors
from gateway.providers.upstream_http import Endpoint, UpstreamPool, UpstreamResponse

__all__ = ["HTTPTransport", "time_limit"]

USER_AGENT = "llm-gateway/0.1"


def time_limit(model: ModelSpec, deadline: float | None) -> float:
    """Seconds a call may take: the model's timeout, cut short by a deadline (event-loop time).
    A deadline already passed is a timeout at once: nothing is sent upstream."""
    if deadline is None:
        return model.timeout_s
    left = deadline - asyncio.get_running_loop().time()
    if left <= 0:
        raise DeadlineExceeded(f"the routing deadline passed before model '{model.name}' was called")
    return min(model.timeout_s, left)


class HTTPTransport:
    def __init__(self, pool: UpstreamPool) -> None:
        self._pool = pool
        self._endpoints: dict[tuple[str, str], Endpoint] = {}

    def endpoint(self, model: ModelSpec, path: str, headers: dict[str, str]) -> Endpoint:
        key = (model.name, path)
        found = self._endpoints.get(key)
        if found is None:
            headers = {"User-Agent": USER_AGENT, "Content-Type": "application/json", **headers}
            found = self._endpoints[key] = Endpoint(f"{model.api_base}{path}", headers)
        return found

    async def post_json(
        self, model: ModelSpec, endpoint: Endpoint, body: dict[str, Any], deadline: float | None = None
    ) -> Any:
        """POST and return the parsed JSON answer; any failure becomes a GatewayError."""
        with upstream_errors(model):
            async with asyncio.timeout(time_limit(model, deadline)) as limit:  # head and body together
                response = await self._pool.post(endpoint, orjson.dumps(body), None)
                if response.status == 200:
                    try:
                        raw = await response.read()
                    finally:
                        response.release()
            if response.status != 200:
                raise await _status_error(model, response, limit.when())
            return orjson.loads(raw)

    async def open_stream(
        self, model: ModelSpec, endpoint: Endpoint, body: dict[str, Any], deadline: float | None = None
    ) -> UpstreamResponse:
        """POST and return the open response once its headers say 200. Connecting, the head and
        an error's body share one time limit; the body of a 200 then has the model's read timeout
        between chunks."""
        with upstream_errors(model):
            async with asyncio.timeout(time_limit(model, deadline)) as limit:
                response = await self._pool.post(endpoint, orjson.dumps(body), None)
            if response.status != 200:
                raise await _status_error(model, response, limit.when())
        response.read_timeout = model.timeout_s
        return response


async def _status_error(model: ModelSpec, response: UpstreamResponse, until: float | None) -> Exception:
    """The error a non-200 answer stands for, its body read by `until` (event-loop time, the
    call's time limit). A body too slow to read leaves the status to say what happened."""
    try:
        async with asyncio.timeout_at(until):
            raw = await response.read()
    except TimeoutError:
        raw = b""
    finally:
        response.release()
    return status_error(model, response.status, raw, response.headers)
