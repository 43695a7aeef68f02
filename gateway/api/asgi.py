"""The process's ASGI entry point. The model routes (`POST /v1/chat/completions`, `/v1/messages`,
`/v1/responses`, `/v1/embeddings`, ...) go straight to their handlers: FastAPI's middleware and
dependency stack costs ~0.15 ms of CPU per request there. Every other route, the error handlers
and the lifespan are FastAPI's."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from types import MappingProxyType
from typing import Any

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from gateway.api import chat, completions, embeddings, messages, responses
from gateway.config.schema import ServerConfig
from gateway.errors import MethodNotAllowed

__all__ = ["GatewayASGI"]

_HANDLERS: MappingProxyType[str, Callable[[Request], Awaitable[Any]]] = MappingProxyType({
    chat.PATH: chat.chat_completions,
    completions.PATH: completions.create_completion,
    messages.PATH: messages.create_message,
    messages.COUNT_PATH: messages.count_tokens,
    responses.PATH: responses.create_response,
    embeddings.PATH: embeddings.create_embeddings,
})


class GatewayASGI:
    def __init__(self, api: FastAPI, in_flight: Any, server: ServerConfig) -> None:
        self.api = api
        self.in_flight = in_flight  # gateway_in_flight_requests: up on entry, down when the last byte is sent
        self.server = server  # the limits `gateway serve`'s protocol applies to each connection

    @property
    def state(self) -> Any:
        return self.api.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = _HANDLERS.get(scope["path"]) if scope["type"] == "http" else None
        if handler is not None and scope["method"] != "POST":
            await _wrong_method(scope["path"], scope["method"])(scope, receive, send)
            return
        if handler is not None:
            scope["app"] = self.api
            self.in_flight.inc()
            try:
                response = await handler(Request(scope, receive))
                await response(scope, receive, send)
            finally:
                self.in_flight.dec()
            return
        if scope["type"] != "http":
            await self.api(scope, receive, send)
            return
        try:
            await self.api(scope, receive, send)
        except Exception:  # noqa: S110
            # Starlette re-raises an error after its handler has logged it and answered 500:
            # letting uvicorn log it again would write every traceback twice.
            return


def _wrong_method(path: str, method: str) -> Response:
    """405 in the path's API's error shape (Anthropic's for the Messages API)."""
    exc = MethodNotAllowed(f"{method} is not allowed on {path}: use POST")
    body = messages.Messages.error_body(exc) if path.startswith(messages.PATH) else exc.body_bytes()
    return Response(body, status_code=405, media_type="application/json", headers={"allow": "POST"})
