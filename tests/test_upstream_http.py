"""Tests for gateway.providers.upstream_http against real loopback servers.

The servers are raw `asyncio.start_server` handlers written here, so every test controls the exact
bytes on the wire, when they are written, how many connections are accepted and when they close.
"""

from __future__ import annotations

import asyncio
import gzip
import re
import shutil
import socket
import ssl
import subprocess
import time
import zlib
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from gateway.providers.upstream_http import (
    _HIGH_WATER,
    Endpoint,
    UpstreamConnectError,
    UpstreamDisconnected,
    UpstreamPool,
    UpstreamProtocolError,
    UpstreamResponse,
)

# --------------------------------------------------------------------------- helpers

Handler = Callable[["RawServer", int, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def run(coro: Coroutine[Any, Any, Any], timeout: float = 5.0) -> Any:
    """Run one test coroutine with a hard ceiling, so a hang fails fast instead of stalling the suite."""

    async def main() -> Any:
        async with asyncio.timeout(timeout):
            return await coro

    return asyncio.run(main())


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"


def ok(body: bytes, extra: bytes = b"", status: bytes = b"200 OK") -> bytes:
    return b"HTTP/1.1 " + status + b"\r\nContent-Length: %d\r\n" % len(body) + extra + b"\r\n" + body


async def read_request(reader: asyncio.StreamReader) -> bytes | None:
    """One whole request (head + Content-Length body) exactly as received, or None at a clean EOF."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        assert exc.partial == b"", f"client sent a truncated request head: {exc.partial!r}"
        return None
    match = re.search(rb"\r\ncontent-length: *(\d+)\r\n", head, re.IGNORECASE)
    body = await reader.readexactly(int(match.group(1))) if match else b""
    return head + body


class RawServer:
    """A loopback HTTP server whose per-connection behaviour is a handler coroutine."""

    def __init__(self, handler: Handler, ssl_context: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.ssl_context = ssl_context
        self.accepted = 0
        self.requests: dict[int, list[bytes]] = {}  # connection index -> requests received on it
        self.client_eof: dict[int, asyncio.Event] = {}  # set when the client closed that connection
        self.errors: list[BaseException] = []
        self._writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> RawServer:
        self.server = await asyncio.start_server(self._on_connection, "127.0.0.1", 0, ssl=self.ssl_context)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        self.server.close()
        for writer in self._writers:
            writer.close()
        await self.server.wait_closed()
        await asyncio.sleep(0)
        if exc_info[0] is None and self.errors:
            raise self.errors[0]

    def url(self, path: str = "/v1/chat/completions") -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        index = self.accepted
        self.accepted += 1
        self.requests[index] = []
        self.client_eof[index] = asyncio.Event()
        self._writers.append(writer)
        try:
            await self.handler(self, index, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        except BaseException as exc:  # surfaced by __aexit__: a broken handler must fail the test
            self.errors.append(exc)
        finally:
            writer.close()

    async def next_request(self, index: int, reader: asyncio.StreamReader) -> bytes | None:
        request = await read_request(reader)
        if request is None:
            self.client_eof[index].set()
        else:
            self.requests[index].append(request)
        return request

    async def wait_client_eof(self, index: int, reader: asyncio.StreamReader) -> None:
        """Park until the client closes this connection (and record that it did)."""
        try:
            rest = await reader.read()
        except ConnectionError:
            rest = b""
        assert rest == b"", f"unexpected bytes from client: {rest!r}"
        self.client_eof[index].set()


def keep_alive(respond: Callable[[int, int, bytes], bytes]) -> Handler:
    """A keep-alive handler: answers every request on the connection with respond(conn, n, request)."""

    async def handler(srv: RawServer, index: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        n = 0
        while (request := await srv.next_request(index, reader)) is not None:
            writer.write(respond(index, n, request))
            await writer.drain()
            n += 1

    return handler


def numbered(index: int, n: int, request: bytes) -> bytes:
    return ok(b"conn=%d req=%d" % (index, n), b"Content-Type: text/plain\r\n")


async def post_read(pool: UpstreamPool, endpoint: Endpoint, body: bytes = b"{}", timeout: float = 2.0) -> bytes:
    response = await pool.post(endpoint, body, timeout)
    try:
        return await response.read()
    finally:
        response.release()


async def wait_for(predicate: Callable[[], bool], timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------- Endpoint


def test_endpoint_head_defaults_strip_userinfo_and_keep_explicit_port() -> None:
    endpoint = Endpoint("https://user:secret@api.example.com", {"X-A": "1"})
    assert (endpoint.tls, endpoint.host, endpoint.port, endpoint.key) == (
        True, "api.example.com", 443, ("api.example.com", 443, True))
    assert endpoint.head == b"POST / HTTP/1.1\r\nHost: api.example.com\r\nX-A: 1\r\nContent-Length: "

    endpoint = Endpoint("http://[::1]:8080/v1/x?a=1&b=2", {})
    assert (endpoint.tls, endpoint.host, endpoint.port) == (False, "::1", 8080)
    assert endpoint.head == b"POST /v1/x?a=1&b=2 HTTP/1.1\r\nHost: [::1]:8080\r\nContent-Length: "

    assert Endpoint("http://example.com/p", {}).port == 80


# --------------------------------------------------------------------------- 1. Content-Length


def test_content_length_body_status_lowercased_headers_and_exact_request_bytes() -> None:
    answer = b'{"id":"cmpl-1","choices":[]}'

    async def handler(srv: RawServer, index: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await srv.next_request(index, reader)
        writer.write(b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nX-Request-ID: abc-123\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(answer) + answer)
        await srv.wait_client_eof(index, reader)

    async def main() -> None:
        async with RawServer(handler) as srv:
            endpoint = Endpoint(srv.url("/v1/chat/completions?api-version=2024-06-01"),
                                {"Authorization": "Bearer sk-test", "Content-Type": "application/json"})
            pool = UpstreamPool()
            body = b'{"model":"m","messages":[{"role":"user","content":"h\xc3\xa9"}]}'
            response = await pool.post(endpoint, body, 2.0)
            assert response.status == 201
            assert response.headers == {"content-type": "application/json", "x-request-id": "abc-123",
                                        "content-length": str(len(answer))}
            assert await response.read() == answer
            assert await response.read() == b""  # exhausted, not re-read nor hanging
            response.release()
            pool.close()
            await asyncio.wait_for(srv.client_eof[0].wait(), 1.0)  # pool.close() closed the idle connection
            assert srv.requests == {0: [
                b"POST /v1/chat/completions?api-version=2024-06-01 HTTP/1.1\r\n"
                b"Host: 127.0.0.1:%d\r\n"
                b"Authorization: Bearer sk-test\r\n"
                b"Content-Type: application/json\r\n"
                b"Content-Length: %d\r\n"
                b"\r\n" % (srv.port, len(body)) + body
            ]}

    run(main())


def test_empty_request_body_and_empty_response_body() -> None:
    async def main() -> None:
        async with RawServer(keep_alive(lambda i, n, r: ok(b""))) as srv:
            pool = UpstreamPool()
            response = await pool.post(Endpoint(srv.url("/"), {}), b"", 2.0)
            assert (response.status, await response.read()) == (200, b"")
            response.release()
            assert srv.requests[0] == [b"POST / HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Length: 0\r\n\r\n" % srv.port]
            pool.close()

    run(main())


# --------------------------------------------------------------------------- 2. chunked and line_batches


def test_chunked_body_read_whole_across_several_writes() -> None:
    parts = [b'{"a":', b"1234567890" * 50, b',"b":"\xe2\x82\xac"}']

    async def handler(srv: RawServer, index: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await srv.next_request(index, reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for part in parts:
            writer.write(chunk(part))
            await writer.drain()
            await asyncio.sleep(0.01)
        writer.write(LAST_CHUNK)
        await srv.wait_client_eof(index, reader)

    async def main() -> None:
        async with RawServer(handler) as srv:
            pool = UpstreamPool()
            response = await pool.post(Endpoint(srv.url(), {}), b"{}", 2.0)
            assert response.headers == {"transfer-encoding": "chunked"}
            assert await response.read() == b"".join(parts)
            response.release()
            assert len(pool._idle[("127.0.0.1", srv.port, False)]) == 1  # chunked end seen: reusable
            pool.close()

    run(main())


def test_line_batches_split_lines_and_never_hold_a_batch_back() -> None:
    first_batch_seen = asyncio.Event()
    second_write_done = False

    async def handler(srv: RawServer, index: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal second_write_done
        await srv.next_request(index, reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        writer.write(chunk(b'data: {"n":1}\n\ndata: {"n"'))  # second event split mid-line
        await writer.drain()
        await asyncio.wait_for(first_batch_seen.wait(), 2.0)  # only after the client yielded batch 1
        writer.write(chunk(b':2}\n\n'))
        await writer.drain()
        second_write_done = True
        await asyncio.sleep(0.05)
        writer.write(chunk(b"data: thr"))  # no newline at all: nothing to yield yet
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(chunk(b"ee\n\ndata: [DONE]\n\nunterminated"))
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(LAST_CHUNK)
        await srv.wait_client_eof(index, reader)

    async def main() -> None:
        async with RawServer(handler) as srv:
            pool = UpstreamPool()
            response = await pool.post(Endpoint(srv.url(), {}), b"{}", 2.0)
            batches = response.line_batches()
            first = await asyncio.wait_for(batches.__anext__(), 1.0)
            assert first == [b'data: {"n":1}', b""]
            assert not second_write_done  # yielded without waiting for later data
            first_batch_seen.set()
            rest = [batch async for batch in batches]
            assert rest == [
                [b'data: {"n":2}', b""],
                [b"data: three", b"", b"data: [DONE]", b""],
                [b"unterminated"],
            ]
            response.release()
            pool.close()

    run(main())


# --------------------------------------------------------------------------- 3. keep-alive


def test_keep_alive_reuses_one_connection_and_close_forces_a_new_one() -> None:
    async def main() -> None:
        async with RawServer(keep_alive(numbered)) as srv:
            pool = UpstreamPool()
            endpoint = Endpoint(srv.url(), {})
            assert await post_read(pool, endpoint, b"a") == b"conn=0 req=0"
            assert await post_read(pool, endpoint, b"bb") == b"conn=0 req=1"
            assert srv.accepted == 1
            assert [r[-2:] for r in srv.requests[0]] == [b"\na", b"bb"]

            response = await pool.post(endpoint, b"c", 2.0)
            assert await response.read() == b"conn=0 req=2"
            response.close()  # torn down, not pooled
            await asyncio.wait_for(srv.client_eof[0].wait(), 1.0)

            assert await post_read(pool, endpoint) == b"conn=1 req=0"
            assert srv.accepted == 2
            pool.close()
            await asyncio.wait_for(srv.client_eof[1].wait(), 1.0)

    run(main())


def test_concurrent_requests_use_separate_connections_and_max_idle_is_honoured() -> None:
    async def main() -> None:
        async with RawServer(keep_alive(numbered)) as srv:
            pool = UpstreamPool(max_idle_per_host=1)
            endpoint = Endpoint(srv.url(), {})
            first, second = await asyncio.gather(pool.post(endpoint, b"1", 2.0), pool.post(endpoint, b"2", 2.0))
            assert srv.accepted == 2
            assert sorted([await first.read(), await second.read()]) == [b"conn=0 req=0", b"conn=1 req=0"]
            first.release()
            second.release()  # over max_idle_per_host: closed
            await wait_for(lambda: any(e.is_set() for e in srv.client_eof.values()))
            await asyncio.sleep(0.05)
            assert sum(e.is_set() for e in srv.client_eof.values()) == 1  # one closed, one kept idle
            assert (await post_read(pool, endpoint)).endswith(b"req=1")
            assert srv.accepted == 2
            pool.close()

    run(main())


def test_release_of_an_unfinished_response_closes_the_connection() -> None:
    async def handler(srv: RawServer, index: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if index == 0:
            await srv.next_request(index, reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly-part")
            await srv.wait_client_eof(index, reader)
        else:
            await keep_alive(numbered)(srv, index, reader, writer)

    async def main() -> None:
        async with RawServer(handler) as srv:
            pool = UpstreamPool()
            endpoint = Endpoint(srv.url(), {})
            response = await pool.post(endpoint, b"{}", 2.0)
            response.release()  # body not finished: must not be pooled (its rest would poison the next answer)
            await asyncio.wait_for(srv.client_eof[0].wait(), 1.0)
            assert await post_read(pool, endpoint) == b"conn=1 req=0"
            pool.close()

    run(main())


# --------------------------------------------------------------------------- 4. upstream closes idle connections


def test_server_closing_an_idle_kept_alive_connection_is_transparent() -> None:
    async def handler(srv: RawServer, index: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await srv.next_request(index, reader)
        assert request is not None
        writer.write(numbered(index, 0, request))  # keep-alive answer...
        await writer.drain()
        writer.close()  # ...then the idle connection is dropped

    async def main() -> None:
        async with RawServer(handler) as srv:
            pool = UpstreamPool()
            endpoint = Endpoint(srv.url(), {})
            assert await post_read(pool, endpoint) == b"conn=0 req=0"
            await asyncio.sleep(0.05)  # the close reaches the client while the connection idles in the pool
            assert await post_read(pool, endpoint) == b"conn=1 req=0"
            assert srv.accepted == 2
            assert [len(srv.requests[i]) for i in (0, 1)] == [1, 1]
            pool.close()

    run(main())


def test_idle_connection_closed_as_the_next_request_is_sent_is_retried_on_a_new_one() -> None:
    # The race: the pooled connection still looks alive, the request is written, and only then does the
    # upstream's close arrive (it never answers). The request must be retried on a fresh connection.
    async def handler(srv: RawServer, index: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await srv.next_request(index, reader)
        assert request is not None
        writer.write(numbered(index, 0, request))
        await writer.drain()
        if index == 0:
            await srv.next_request(index, reader)  # second request on the pooled connection: hang up
            return
        await srv.wait_client_eof(index, reader)

    async def main() -> None:
        async with RawServer(handler) as srv:
            pool = UpstreamPool()
            endpoint = Endpoint(srv.url(), {})
            assert await post_read(pool, endpoint, b"first") == b"conn=0 req=0"
            assert await post_read(pool, endpoint, b"second") == b"conn=1 req=0"
            assert srv.accepted == 2
            assert [r.rsplit(b"\r\n", 1)[-1] for r in srv.requests[0]] == [b"first", b"second"]
            assert [r.rsplit(b"\r\n", 1)[-1] for r in srv.requests[1]] == [b"second"]
            pool.close()

    run(main())


# --------------------------------------------------------------------------- 5. not reusable


@pytest.mark.parametrize("answer", [
    ok(b"bye", b"Connection: close\r\n"),
    b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nbye",
], ids=["connection-close", "http-1.0"])
def test_non_keep_alive_answer_is_not_reused(answer: bytes) -> None:
    async def handler(srv: RawServer, index: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await srv.next_request(index, reader)
        writer.write(answer)  # the server does NOT close: the client must honour the header itself
        await srv.wait_client_eof(index, reader)

    async def main() -> None:
        async with RawServer(handler) as srv:
            pool = UpstreamPool()
            endpoint = Endpoint(srv.url(), {})
            assert await post_read(pool, endpoint) == b"bye"
            await asyncio.wait_for(srv.client_eof[0].wait(), 1.0)  # client closed it on release
            assert await post_read(pool, endpoint) == b"bye"
            assert srv.accepted == 2
            pool.close()

    run(main())


# --------------------------------------------------------------------------- 6. content encodings


@pytest.mark.parametrize(("encoding", "compress"), [("gzip", gzip.compress), ("deflate", zlib.compress)])
def test_compressed_body_is_decoded_by_read(encoding: str, compress: Callable[[bytes], bytes]) -> None:
    payload = b'{"choices":[{"message":{"content":"' + b"compressible text " * 2000 + b'"}}]}'
    wire = compress(payload)
    assert len(wire) < len(payload) // 10

    async def main() -> None:
        answer = ok(wire, b"Content-Encoding: %s\r\n" % encoding.encode())
        async with RawServer(keep_alive(lambda i, n, r: answer)) as srv:
            pool = UpstreamPool()
            endpoint = Endpoint(srv.url(), {})
            response = await pool.post(endpoint, b"{}", 2.0)
            assert response.headers["content-encoding"] == encoding
            assert response.headers["content-length"] == str(len(wire))
            assert await response.read() == payload
            response.release()
            assert await post_read(pool, endpoint) == payload  # a fresh decoder per response
            assert srv.accepted == 1
            pool.close()

    run(main())


def test_gzip_stream_is_decoded_by_line_batches() -> None:
    compressor = zlib.compressobj(wbits=31)  # gzip container
    pieces = [
        compressor.compress(b"data: one\n\ndata: t") + compressor.flush(zlib.Z_SYNC_FLUSH),
        compressor.compress(b"wo\n\n") + compressor.flush(zlib.Z_SYNC_FLUSH),
        compressor.compress(b"data: [DONE]\n\n") + compressor.flush(),
    ]

    async def handler(srv: RawServer, index: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await srv.next_request(index, reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n")
        for piece in pieces:
            writer.write(chunk(piece))
            await writer.drain()
            await asyncio.sleep(0.03)
        writer.write(LAST_CHUNK)
        await srv.wait_client_eof(index, reader)

    async def main() -> None:
        async with RawServer(handler) as srv:
            pool = UpstreamPool()
            response = await pool.post(Endpoint(srv.url(), {}), b"{}", 2.0)
            batches = [batch async for batch in response.line_batches()]
            assert batches == [[b"data: one", b""], [b"data: two", b""], [b"data: [DONE]", b""]]
            response.release()
            pool.close()

    run(main())


# --------------------------------------------------------------------------- 7. failures


def test_malformed_status_line_raises_protocol_error() -> None:
    async def handler(srv: RawServer, index: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await srv.next_request(index, reader)
        writer.write(b"HTTP/1.1 OK-ish garbage\r\n\r\n")
        await srv.wait_client_eof(index, reader)

    async def main() -> None:
        async with RawServer(handler) as srv:
            pool = UpstreamPool()
            with pytest.raises(UpstreamProtocolError, match="malformed HTTP"):
                await pool.post(Endpoint(srv.url(), {}), b"{}", 2.0)
            await asyncio.wait_for(srv.client_eof[0].wait(), 1.0)  # and the connection was dropped
            assert pool._idle.get(("127.0.0.1", srv.port, False), []) == []

    run(main())


def test_malformed_chunk_mid_body_raises_protocol_error_from_read() -> None:
    # BUG: the parser error is recorded as UpstreamProtocolError, but the close() that follows it makes
    # connection_lost overwrite it with UpstreamDisconnected when the reader was not waiting right then.
    async def handler(srv: RawServer, index: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await srv.next_request(index, reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk(b"hello"))
        await writer.drain()
        await asyncio.sleep(0.02)
        writer.write(b"zz-not-a-size\r\n")
        await srv.wait_client_eof(index, reader)

    async def main() -> None:
        async with RawServer(handler) as srv:
            pool = UpstreamPool()
            response = await pool.post(Endpoint(srv.url(), {}), b"{}", 2.0)
            await asyncio.wait_for(srv.client_eof[0].wait(), 1.0)  # the client dropped the broken connection
            await asyncio.sleep(0.01)
            with pytest.raises(UpstreamProtocolError):
                await response.read()
            response.release()

    run(main())


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_server_closing_mid_body_raises_disconnected_from_read(framing: str) -> None:
    async def handler(srv: RawServer, index: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await srv.next_request(index, reader)
        if framing == "chunked":
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk(b"partial"))
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\npartial")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.close()

    async def main() -> None:
        async with RawServer(handler) as srv:
            pool = UpstreamPool()
            endpoint = Endpoint(srv.url(), {})
            response = await pool.post(endpoint, b"{}", 2.0)
            with pytest.raises(UpstreamDisconnected):
                await response.read()
            response.release()
            assert pool._idle.get(endpoint.key, []) == []

            response = await pool.post(endpoint, b"{}", 2.0)  # same through line_batches
            got = []
            with pytest.raises(UpstreamDisconnected):
                async for batch in response.line_batches():
                    got.append(batch)
            assert got == []  # "partial" had no newline: nothing complete was yielded
            response.close()

    run(main())


def test_connect_to_a_closed_port_raises_connect_error() -> None:
    async def main() -> None:
        port = closed_port()
        with pytest.raises(UpstreamConnectError, match=f"127.0.0.1:{port}"):
            await UpstreamPool().post(Endpoint(f"http://127.0.0.1:{port}/v1", {}), b"{}", 2.0)

    run(main())


def test_headers_that_never_arrive_raise_timeout_and_drop_the_connection() -> None:
    async def handler(srv: RawServer, index: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await srv.next_request(index, reader)
        await srv.wait_client_eof(index, reader)  # never answers

    async def main() -> None:
        async with RawServer(handler) as srv:
            pool = UpstreamPool()
            started = time.monotonic()
            with pytest.raises(TimeoutError):
                await pool.post(Endpoint(srv.url(), {}), b"{}", 0.2)
            assert 0.15 < time.monotonic() - started < 1.0
            await asyncio.wait_for(srv.client_eof[0].wait(), 1.0)
            assert len(srv.requests[0]) == 1

    run(main())


def test_stream_stalling_past_read_timeout_raises_timeout_from_line_batches() -> None:
    async def handler(srv: RawServer, index: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await srv.next_request(index, reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk(b"data: 1\n\n"))
        await srv.wait_client_eof(index, reader)  # then silence

    async def main() -> None:
        async with RawServer(handler) as srv:
            pool = UpstreamPool()
            response = await pool.post(Endpoint(srv.url(), {}), b"{}", 2.0)
            response.read_timeout = 0.2
            batches = response.line_batches()
            assert await batches.__anext__() == [b"data: 1", b""]
            started = time.monotonic()
            with pytest.raises(TimeoutError):
                await batches.__anext__()
            assert 0.15 < time.monotonic() - started < 1.0
            response.close()
            await asyncio.wait_for(srv.client_eof[0].wait(), 1.0)  # close() is how the upstream learns

    run(main())


def test_read_timeout_is_per_gap_not_per_stream() -> None:
    async def handler(srv: RawServer, index: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await srv.next_request(index, reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for n in range(5):
            writer.write(chunk(b"data: %d\n" % n))
            await writer.drain()
            await asyncio.sleep(0.06)
        writer.write(LAST_CHUNK)
        await srv.wait_client_eof(index, reader)

    async def main() -> None:
        async with RawServer(handler) as srv:
            pool = UpstreamPool()
            response = await pool.post(Endpoint(srv.url(), {}), b"{}", 2.0)
            response.read_timeout = 0.15  # shorter than the whole stream (~0.3 s), longer than any gap
            lines = [line async for batch in response.line_batches() for line in batch]
            assert lines == [b"data: %d" % n for n in range(5)]
            response.release()
            pool.close()

    run(main())


# --------------------------------------------------------------------------- 8. TLS


@pytest.fixture(scope="module")
def tls_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl CLI is not installed: cannot generate a self-signed certificate")
    directory = tmp_path_factory.mktemp("tls")
    key, cert = directory / "k.pem", directory / "c.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True, timeout=30,
    )
    return cert, key


def test_tls_round_trip_with_keep_alive(tls_cert: tuple[Path, Path]) -> None:
    cert, key = tls_cert
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)

    async def main() -> None:
        async with RawServer(keep_alive(numbered), ssl_context=server_context) as srv:
            client_context = ssl.create_default_context(cafile=str(cert))
            pool = UpstreamPool(ssl_context=client_context)
            endpoint = Endpoint(srv.url("/v1/messages"), {"x-api-key": "k"})
            assert endpoint.tls and endpoint.key == ("127.0.0.1", srv.port, True)
            response = await pool.post(endpoint, b'{"x":1}', 2.0)
            assert response.status == 200
            assert response.headers["content-type"] == "text/plain"
            assert await response.read() == b"conn=0 req=0"
            response.release()
            assert await post_read(pool, endpoint) == b"conn=0 req=1"
            assert srv.accepted == 1
            assert srv.requests[0][0] == (b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nx-api-key: k\r\n"
                                          b"Content-Length: 7\r\n\r\n{\"x\":1}" % srv.port)
            pool.close()
            await asyncio.wait_for(srv.client_eof[0].wait(), 1.0)

    run(main())


def test_tls_untrusted_certificate_raises_connect_error(tls_cert: tuple[Path, Path]) -> None:
    cert, key = tls_cert
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)

    async def main() -> None:
        async with RawServer(keep_alive(numbered), ssl_context=server_context) as srv:
            pool = UpstreamPool(ssl_context=ssl.create_default_context())  # system CAs only
            with pytest.raises(UpstreamConnectError) as caught:
                await pool.post(Endpoint(srv.url(), {}), b"{}", 2.0)
            assert isinstance(caught.value.__cause__, ssl.SSLCertVerificationError)
            assert srv.requests.get(0, []) == []

    run(main())


# --------------------------------------------------------------------------- 9. backpressure


def test_backpressure_pauses_reading_and_the_body_arrives_intact() -> None:
    payload = bytes(range(256)) * (3 * 4096) + b"end"  # ~3 MB, every byte position checked
    server_done = asyncio.Event()

    async def handler(srv: RawServer, index: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await srv.next_request(index, reader)
        assert request is not None
        writer.write(ok(payload))
        await writer.drain()
        server_done.set()
        await keep_alive(numbered)(srv, index, reader, writer)

    async def main() -> None:
        async with RawServer(handler) as srv:
            pool = UpstreamPool()
            endpoint = Endpoint(srv.url(), {})
            response = await pool.post(endpoint, b"{}", 2.0)
            transport = response._conn.transport
            assert transport is not None
            await wait_for(lambda: not transport.is_reading())  # the consumer is not reading: paused
            buffered = response._buffered
            assert _HIGH_WATER < buffered < 2 * _HIGH_WATER
            await asyncio.sleep(0.1)
            assert not transport.is_reading()
            assert response._buffered == buffered  # nothing more was pulled in while paused
            assert not response._done

            body = await response.read()
            assert len(body) == len(payload)
            assert body == payload
            assert transport.is_reading()
            await asyncio.wait_for(server_done.wait(), 1.0)
            response.release()
            assert await post_read(pool, endpoint) == b"conn=0 req=0"  # still a healthy pooled connection
            assert srv.accepted == 1
            pool.close()

    run(main())


def test_released_connection_is_not_left_paused_in_the_pool() -> None:
    # BUG: a body of just over _HIGH_WATER that arrives whole while nobody reads pauses the transport and
    # completes the message in the same read. release() then pools the still-paused connection, so the
    # next request on it is written but its answer is never read: it times out.
    payload = b"x" * (_HIGH_WATER + 1)

    async def handler(srv: RawServer, index: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await keep_alive(lambda i, n, r: ok(payload) if n == 0 else numbered(i, n, r))(srv, index, reader, writer)

    async def main() -> None:
        async with RawServer(handler) as srv:
            pool = UpstreamPool()
            endpoint = Endpoint(srv.url(), {})
            response: UpstreamResponse = await pool.post(endpoint, b"{}", 2.0)
            await wait_for(lambda: response._done)
            assert response.status == 200
            response.release()  # complete answer, body not needed: the connection goes back to the pool
            assert await post_read(pool, endpoint, timeout=0.5) == b"conn=0 req=1"
            pool.close()

    run(main())


# --------------------------------------------------------------------------- framing edge cases (spec)


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n",
    b"HTTP/1.0 200 OK\r\nContent-Type: text/event-stream\r\n\r\n",
], ids=["http-1.1-connection-close", "http-1.0"])
def test_body_delimited_by_connection_close_is_read_whole(answer: bytes) -> None:
    # BUG: with neither Content-Length nor chunked, the body ends when the server closes (RFC 9112 §6.3,
    # e.g. http.server-based or HTTP/1.0 upstreams streaming SSE). httptools never reports the message
    # complete on EOF, so connection_lost turns every such body into UpstreamDisconnected.
    async def handler(srv: RawServer, index: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await srv.next_request(index, reader)
        writer.write(answer + b"data: a\n\n")
        await writer.drain()
        await asyncio.sleep(0.03)
        writer.write(b"data: b\n\n")
        await writer.drain()
        writer.close()

    async def main() -> None:
        async with RawServer(handler) as srv:
            pool = UpstreamPool()
            response = await pool.post(Endpoint(srv.url(), {}), b"{}", 2.0)
            assert response.status == 200
            assert await response.read() == b"data: a\n\ndata: b\n\n"
            response.release()
            assert srv.accepted == 1

    run(main())


@pytest.mark.parametrize("interim", [b"HTTP/1.1 100 Continue\r\n\r\n",
                                     b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"],
                         ids=["100", "103"])
def test_interim_1xx_response_is_skipped(interim: bytes) -> None:
    # BUG: RFC 9110 §15.2 — a client MUST parse (and skip) unexpected 1xx responses before the final one.
    # Here the 1xx head resolves post() with its status, its message end marks the response done with an
    # empty body, and the real answer then lands on a connection already returned to the pool.
    async def handler(srv: RawServer, index: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        n = 0
        while (request := await srv.next_request(index, reader)) is not None:
            writer.write(interim)
            await writer.drain()
            await asyncio.sleep(0.03)
            writer.write(numbered(index, n, request))
            await writer.drain()
            n += 1

    async def main() -> None:
        async with RawServer(handler) as srv:
            pool = UpstreamPool()
            endpoint = Endpoint(srv.url(), {})
            response = await pool.post(endpoint, b"{}", 2.0)
            assert response.status == 200
            assert await response.read() == b"conn=0 req=0"
            assert "link" not in response.headers
            response.release()
            assert await post_read(pool, endpoint) == b"conn=0 req=1"
            pool.close()

    run(main())
