"""The process's ASGI entry point. The hot route, `POST /v1/chat/completions`, goes straight to
its handler: FastAPI's middleware and dependency stack costs ~0.15 ms of CPU per request there.
Every other route, the error handlers and the lifespan are FastAPI's."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from gateway.api import chat
from gateway.config.schema import ServerConfig

__all__ = ["GatewayASGI"]


class GatewayASGI:
    def __init__(self, api: FastAPI, in_flight: Any, server: ServerConfig) -> None:
        self.api = api
        self.in_flight = in_flight  # gateway_in_flight_requests: up on entry, down when the last byte is sent
        self.server = server  # the limits `gateway serve`'s protocol applies to each connection

    @property
    def state(self) -> Any:
        return self.api.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == chat.PATH and scope["method"] == "POST":
            scope["app"] = self.api
            self.in_flight.inc()
            try:
                response = await chat.chat_completions(Request(scope, receive))
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
