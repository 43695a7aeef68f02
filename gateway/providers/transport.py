"""What the HTTP adapters share: prepared endpoints per model, a POST that checks the status,
and error translation around every await on the upstream."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from gateway.errors import DeadlineExceeded
from gateway.providers.errors import status_error, upstream_errors
from gateway.settings import ModelSpec
from gateway.upstream_http import Endpoint, UpstreamPool, UpstreamResponse

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
        response: UpstreamResponse | None = None
        with upstream_errors(model):
            try:
                async with asyncio.timeout(time_limit(model, deadline)):  # head and body together
                    response = await self._pool.post(endpoint, orjson.dumps(body), None)
                    try:
                        raw = await response.read()
                    finally:
                        response.release()
            except TimeoutError:
                if response is None or response.status == 200:
                    raise
                raw = b""  # an error's body too slow to read: its status still says what happened
            if response.status != 200:
                raise status_error(model, response.status, raw, response.headers)
            return orjson.loads(raw)

    async def open_stream(
        self, model: ModelSpec, endpoint: Endpoint, body: dict[str, Any], deadline: float | None = None
    ) -> UpstreamResponse:
        """POST and return the open response once its headers say 200. Connecting, the head and
        an error's body share one time limit; the body of a 200 then has the model's read timeout
        between chunks."""
        response: UpstreamResponse | None = None
        with upstream_errors(model):
            try:
                async with asyncio.timeout(time_limit(model, deadline)):
                    response = await self._pool.post(endpoint, orjson.dumps(body), None)
                    if response.status != 200:
                        try:
                            raw = await response.read()
                        finally:
                            response.release()
            except TimeoutError:
                if response is None or response.status == 200:
                    raise
                raw = b""  # as in post_json
            if response.status != 200:
                raise status_error(model, response.status, raw, response.headers)
        response.read_timeout = model.timeout_s
        return response
