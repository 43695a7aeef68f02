"""The HTTP/1.1 server protocol `gateway serve` runs under uvicorn: uvicorn's httptools protocol
with what it lacks for a port that faces untrusted clients.

- A request's head (request line and headers) must arrive within `header_timeout_s` of the
  connection opening or of the request's first byte, and its body within `body_timeout_s` of
  the head, else 408 and the connection closes: a client that trickles its request (or sends
  nothing) cannot hold a socket for ever. A body that arrives with its head, as almost every
  one does, costs no timer.
- A head over `max_header_bytes` gets 431.
- A request the parser cannot read gets an OpenAI-shaped 400 (uvicorn sends plain text).

The connection cap and the keep-alive timeout are uvicorn's (`limit_concurrency`,
`timeout_keep_alive`), set by `uvicorn_options`.
"""

from __future__ import annotations

import asyncio
from types import MappingProxyType
from typing import Any

import orjson
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.api.asgi import GatewayASGI
from gateway.config.schema import ServerConfig

__all__ = ["GatewayHttpProtocol", "error_bytes", "uvicorn_options"]

_REASONS = MappingProxyType({400: b"Bad Request", 408: b"Request Timeout", 431: b"Request Header Fields Too Large"})


def error_bytes(status: int, message: str, code: str) -> bytes:
    """A complete HTTP response with an OpenAI-shaped error body; the connection then closes."""
    body = orjson.dumps({"error": {"message": message, "type": "invalid_request_error", "param": None,
                                   "code": code}})
    return b"".join([
        b"HTTP/1.1 %d %s\r\n" % (status, _REASONS[status]), b"content-type: application/json\r\n",
        b"content-length: %d\r\n" % len(body), b"connection: close\r\n\r\n", body,
    ])


class _HeadTooLarge(Exception):
    pass


class GatewayHttpProtocol(HttpToolsProtocol):
    """One connection. Its limits are the app's (`GatewayASGI.server`), so every worker process
    of `gateway serve --workers N` applies its own config's."""

    def __init__(self, config: Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        app = config.loaded_app
        limits = app.server if isinstance(app, GatewayASGI) else ServerConfig()
        self.header_timeout_s = limits.header_timeout_s
        self.body_timeout_s = limits.body_timeout_s
        self.max_header_bytes = limits.max_header_bytes
        self._head_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._in_body = False  # between a request's head and the end of its body
        self._body_timer: asyncio.TimerHandle | None = None
        self._refusal: bytes | None = None  # what to answer instead of uvicorn's plain-text 400

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        self._disarm_body_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._in_body and self._body_timer is None:  # the body is still to come
            self._body_timer = self.loop.call_later(self.body_timeout_s, self._body_too_slow)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = 0
        if self._head_timer is None:  # (the first request's runs from the connection's start)
            self._arm_head_timer()

    def on_url(self, url: bytes) -> None:
        self._count_head(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._disarm_head_timer()
        self._in_body = True
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_body = False
        self._disarm_body_timer()
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a request its parser refused: ours is JSON (and 431 for a head
        that was too large)."""
        refusal = self._refusal or error_bytes(400, f"malformed HTTP request: {msg}", "invalid_http_request")
        self._disarm_head_timer()
        if not self.transport.is_closing():
            self.transport.write(refusal)
            self.transport.close()

    def _count_head(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > self.max_header_bytes:
            self._refusal = error_bytes(431, f"the request head is over {self.max_header_bytes} bytes",
                                        "request_header_too_large")
            raise _HeadTooLarge  # stops the parser; uvicorn then calls send_400_response

    def _arm_head_timer(self) -> None:
        self._disarm_head_timer()
        self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_too_slow)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _disarm_body_timer(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _body_too_slow(self) -> None:
        """The app is still waiting for the body: answer for it, and close (the app then sees the
        client gone, and its own answer goes nowhere)."""
        self._body_timer = None
        if self._in_body and not self.transport.is_closing():
            self.transport.write(error_bytes(408, f"the request body did not arrive within {self.body_timeout_s:g} s",
                                             "request_timeout"))
            self.transport.close()

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.transport.write(error_bytes(408, f"the request head did not arrive within {self.header_timeout_s:g} s",
                                             "request_timeout"))
            self.transport.close()


def uvicorn_options(limits: ServerConfig) -> dict[str, Any]:
    """What `gateway serve` passes to uvicorn (the protocol by name: workers import it)."""
    return {"http": "gateway.api.http_server:GatewayHttpProtocol", "timeout_keep_alive": limits.keep_alive_s,
            "limit_concurrency": limits.max_connections, "h11_max_incomplete_event_size": limits.max_header_bytes}
