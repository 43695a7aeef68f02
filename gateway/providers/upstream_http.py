"""A lean HTTP/1.1 client for upstream calls: keep-alive pool, httptools parser, TLS, streaming.

aiohttp's client spent ~0.3 ms of CPU per proxied request here (request/response objects,
cookie jar, tracing, timers); this one does only what an LLM upstream call needs: POST a
prepared body on a pooled connection and read the answer, whole or as it arrives.

Failures raise `UpstreamConnectError` (could not connect or send), `UpstreamProtocolError`
(unparseable HTTP), `UpstreamDisconnected` (connection lost mid-answer) or `TimeoutError`;
`gateway.providers.errors` translates them.
"""

from __future__ import annotations

import asyncio
import ssl
import zlib
from collections import deque
from collections.abc import AsyncIterator
from typing import Any, cast
from urllib.parse import urlsplit

import httptools

__all__ = ["Endpoint", "UpstreamConnectError", "UpstreamDisconnected", "UpstreamPool", "UpstreamProtocolError",
           "UpstreamResponse"]

_HIGH_WATER = 1 << 20  # pause reading an upstream that is this far ahead of its client


class UpstreamConnectError(ConnectionError):
    pass


class UpstreamDisconnected(ConnectionError):
    pass


class UpstreamProtocolError(ConnectionError):
    pass


class Endpoint:
    """One upstream URL, with its request head prepared once."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        parts = urlsplit(url)
        self.tls = parts.scheme == "https"
        self.host = parts.hostname or "localhost"
        self.port = parts.port or (443 if self.tls else 80)
        host_header = parts.netloc.rsplit("@", 1)[-1]
        lines = [f"POST {parts.path or '/'}{'?' + parts.query if parts.query else ''} HTTP/1.1", f"Host: {host_header}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        self.head = ("\r\n".join(lines) + "\r\nContent-Length: ").encode("latin-1")
        self.key = (self.host, self.port, self.tls)


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: UpstreamResponse | None = None
        self.reusable = False
        self.lost = False
        self.interim = False  # parsing a 1xx response, to be skipped
        self.until_eof = False  # body delimited by the connection closing

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not asyncio subclasses

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamProtocolError(f"malformed HTTP from upstream: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.response is not None and self.until_eof and exc is None:
            self.response._finish()  # a close-delimited body ends here, complete
        self._fail(UpstreamDisconnected("upstream closed the connection"))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        if self.response is not None:
            self.response.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        response = self.response
        if response is None:
            return
        if 100 <= status < 200 and status != 101:  # interim (100 Continue, 103 Early Hints)
            self.interim = True
            response.headers.clear()
            return
        headers = response.headers
        self.until_eof = (
            status not in (204, 304)
            and "content-length" not in headers
            and "chunked" not in headers.get("transfer-encoding", "").lower()
        )
        response._started(status)

    def on_body(self, body: bytes) -> None:
        if self.response is not None:
            self.response._feed(body)

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
            return
        self.until_eof = False
        self.reusable = self.parser.should_keep_alive()
        if self.response is not None:
            self.response._finish()

    def _fail(self, exc: Exception) -> None:
        if self.response is not None:
            self.response._error(exc)

    def close(self) -> None:
        self.reusable = False
        if self.transport is not None:
            self.transport.close()


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError("upstream sent nothing within the read timeout"))


class UpstreamResponse:
    """The answer to one request. Read it whole (`read`) or as lines (`lines`); then `release`
    (connection back to the pool) or `close` (connection torn down: the upstream sees a cancel)."""

    def __init__(self, pool: UpstreamPool, endpoint: Endpoint, conn: _Connection) -> None:
        self._pool, self._endpoint, self._conn = pool, endpoint, conn
        self._conn_ref: _Connection | None = conn  # None once released or closed
        self.status = 0
        self.headers: dict[str, str] = {}
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._done = False
        self._exc: Exception | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._head: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._decoder: Any = None
        self.read_timeout: float | None = None  # max wait for the next body bytes

    # fed by the connection
    def _started(self, status: int) -> None:
        self.status = status
        encoding = self.headers.get("content-encoding", "")
        if encoding in ("gzip", "deflate"):
            self._decoder = zlib.decompressobj(zlib.MAX_WBITS | 32)
        if not self._head.done():
            self._head.set_result(None)

    def _feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > _HIGH_WATER and self._conn.transport is not None:
            self._conn.transport.pause_reading()
        self._wake()

    def _finish(self) -> None:
        self._done = True
        self._wake()

    def _error(self, exc: Exception) -> None:
        if self._done or self._exc is not None:  # the first failure is the one to report
            return
        self._exc = exc
        if not self._head.done():
            self._head.set_exception(exc)
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def _next_chunk(self) -> bytes | None:
        while not self._chunks:
            if self._exc is not None:
                raise self._exc
            if self._done:
                return None
            loop = asyncio.get_running_loop()
            waiter = self._waiter = loop.create_future()
            timer = loop.call_later(self.read_timeout, _expire, waiter) if self.read_timeout else None
            try:
                await waiter
            finally:
                if timer is not None:
                    timer.cancel()
        data = self._chunks.popleft() if len(self._chunks) == 1 else b"".join(self._chunks)
        self._chunks.clear()
        self._buffered = 0
        if self._conn.transport is not None:
            self._conn.transport.resume_reading()
        return self._decoder.decompress(data) if self._decoder is not None else data

    async def read(self) -> bytes:
        parts = []
        while (chunk := await self._next_chunk()) is not None:
            parts.append(chunk)
        return b"".join(parts)

    async def line_batches(self) -> AsyncIterator[list[bytes]]:
        """Complete lines of the body, grouped as they arrived (one group per network read, so
        nothing is ever held back waiting for more). Lines exclude their b"\n"."""
        pending = b""
        while (chunk := await self._next_chunk()) is not None:
            if b"\n" not in chunk:
                pending += chunk
                continue
            *complete, pending = (pending + chunk).split(b"\n")
            yield complete
        if pending:
            yield [pending]

    def release(self) -> None:
        conn, self._conn_ref = self._conn_ref, None
        if conn is None:  # already released or closed
            return
        conn.response = None
        if self._done and self._exc is None and conn.reusable and not conn.lost and conn.transport is not None:
            conn.transport.resume_reading()  # it may have been paused by a large unread body
            self._pool._put(self._endpoint.key, conn)
        else:
            conn.close()

    def close(self) -> None:
        conn, self._conn_ref = self._conn_ref, None
        if conn is not None:
            conn.response = None
            conn.close()


class UpstreamPool:
    def __init__(self, ssl_context: ssl.SSLContext | None = None, max_idle_per_host: int = 256) -> None:
        self._idle: dict[tuple[str, int, bool], list[_Connection]] = {}
        self._ssl = ssl_context
        self._max_idle = max_idle_per_host

    def _put(self, key: tuple[str, int, bool], conn: _Connection) -> None:
        idle = self._idle.setdefault(key, [])
        if len(idle) < self._max_idle:
            idle.append(conn)
        else:
            conn.close()

    async def _connect(self, endpoint: Endpoint, timeout: float | None) -> _Connection:
        loop = asyncio.get_running_loop()
        context = None
        if endpoint.tls:
            context = self._ssl = self._ssl or ssl.create_default_context()
        try:
            async with asyncio.timeout(timeout):
                _, conn = await loop.create_connection(
                    _Connection, endpoint.host, endpoint.port, ssl=context,
                    server_hostname=endpoint.host if context else None,
                )
        except OSError as exc:
            raise UpstreamConnectError(f"cannot connect to {endpoint.host}:{endpoint.port}: {exc}") from exc
        return conn

    async def post(self, endpoint: Endpoint, body: bytes, timeout: float | None) -> UpstreamResponse:
        """Send the request and wait for the status line and headers (not the body), for at most
        `timeout` seconds (None: the caller bounds the whole exchange with its own timeout)."""
        request = b"".join((endpoint.head, str(len(body)).encode(), b"\r\n\r\n", body))
        idle = self._idle.get(endpoint.key)
        while idle:  # a pooled connection the upstream closed meanwhile is retried on a new one
            conn = idle.pop()
            if conn.lost or conn.transport is None or conn.transport.is_closing():
                continue
            try:
                return await self._send(endpoint, conn, request, timeout)
            except UpstreamDisconnected:
                continue
        return await self._send(endpoint, await self._connect(endpoint, timeout), request, timeout)

    async def _send(
        self, endpoint: Endpoint, conn: _Connection, request: bytes, timeout: float | None
    ) -> UpstreamResponse:
        response = conn.response = UpstreamResponse(self, endpoint, conn)
        conn.parser = httptools.HttpResponseParser(conn)
        assert conn.transport is not None
        conn.transport.write(request)
        try:
            if timeout is None:
                await response._head
            else:
                async with asyncio.timeout(timeout):
                    await response._head
        except BaseException:
            response.close()
            raise
        return response

    def close(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()
