"""The fake upstream HTTP server (aiohttp) and a thread-hosted variant for synchronous callers."""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType, TracebackType
from typing import Any, TypeVar

import orjson
from aiohttp import web

from gateway.fake_upstream import anthropic_format, batch_format, embeddings_format, openai_format, responses_format
from gateway.fake_upstream.behaviour import Behaviour, ReplyPlan, Turn, count_input_tokens

T = TypeVar("T")

LOG_MAXLEN = 10_000
_DEFAULT = Behaviour()
_PLAN_CACHE_MAX = 1024
_JSON = "application/json"


def _json(obj: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(obj), content_type=_JSON)


@dataclass(slots=True)
class _Script:
    behaviour: Behaviour
    plan: ReplyPlan
    faults_left: int | None


class FakeUpstream:
    """A real loopback HTTP server speaking the OpenAI Chat Completions, Responses and Embeddings formats
    and the Anthropic Messages format.

    Provider routes: ``POST /v1/chat/completions``, ``POST /v1/responses``, ``POST /v1/embeddings``,
    ``POST /v1/messages`` and ``GET /v1/models``. Every provider request is answered by the behaviour
    scripted for its body's ``model`` (``script`` or ``POST /_fake/script``) and logged with its path,
    headers and body (``calls`` or ``GET /_fake/calls``); ``reset`` / ``POST /_fake/reset`` forget both.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._host = host
        self._port = port
        self._scripts: dict[str, _Script] = {}
        self._default_plans: dict[str, ReplyPlan] = {}  # cache for unscripted models (bounded)
        self._log: deque[dict[str, Any]] = deque(maxlen=LOG_MAXLEN)
        self._seq = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.batches = batch_format.FakeBatches(self._resolve, self._log)  # the Files and Batch APIs
        self.app = self._make_app()

    # ------------------------------------------------------------------ lifecycle
    def _make_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post(openai_format.PATH, self._handle_openai)
        app.router.add_post(responses_format.PATH, self._handle_responses)
        app.router.add_post(embeddings_format.PATH, self._handle_embeddings)
        app.router.add_post(anthropic_format.PATH, self._handle_anthropic)
        app.router.add_post(anthropic_format.PATH + "/count_tokens", self._handle_count_tokens)
        app.router.add_get("/v1/models", self._handle_models)
        self.batches.add_routes(app)
        app.router.add_post("/_fake/script", self._handle_script)
        app.router.add_post("/_fake/reset", self._handle_reset)
        app.router.add_get("/_fake/calls", self._handle_calls)
        return app

    async def start(self) -> None:
        """Bind and serve; port 0 picks a free port (see ``url``)."""
        if self._runner is not None:
            raise RuntimeError("FakeUpstream already started")
        runner = web.AppRunner(self.app, access_log=None, handler_cancellation=True, shutdown_timeout=0.25)
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._port, backlog=1024)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = int(runner.addresses[0][1])

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> FakeUpstream:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self._port}"

    # ------------------------------------------------------------------ scripting
    def script(self, model: str, behaviour: Behaviour | dict[str, Any]) -> None:
        """Set the behaviour for upstream model ``model``; a dict is parsed (unknown keys -> ValueError)."""
        b = behaviour if isinstance(behaviour, Behaviour) else Behaviour.from_dict(behaviour)
        self._scripts[model] = _Script(b, b.plan(model), b.fault_times)

    def reset(self) -> None:
        """Forget all scripts and the call log."""
        self._scripts.clear()
        self._default_plans.clear()
        self._log.clear()
        self.batches.reset()

    def calls(self, model: str | None = None) -> list[dict[str, Any]]:
        """Snapshot (shallow copies) of call-log records, oldest first, optionally for one body model."""
        return [dict(r) for r in self._log if model is None or r["model"] == model]

    def _resolve(self, model: str) -> tuple[Behaviour, ReplyPlan, str | None]:
        entry = self._scripts.get(model)
        if entry is None:
            plan = self._default_plans.get(model)
            if plan is None:
                if len(self._default_plans) >= _PLAN_CACHE_MAX:
                    self._default_plans.clear()
                plan = self._default_plans[model] = _DEFAULT.plan(model)
            return _DEFAULT, plan, None
        fault = entry.behaviour.fault
        if fault is not None and entry.faults_left is not None:
            if entry.faults_left > 0:
                entry.faults_left -= 1
            else:
                fault = None
        return entry.behaviour, entry.plan, fault

    # ------------------------------------------------------------------ provider endpoints
    async def _handle_openai(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, openai_format)

    async def _handle_responses(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, responses_format)

    async def _handle_embeddings(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, embeddings_format)

    async def _handle_anthropic(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, anthropic_format)

    async def _handle_count_tokens(self, request: web.Request) -> web.Response:
        """Anthropic's token count: free, and counted like the fake's own usage (logged as a call)."""
        body = orjson.loads(await request.read() or b"null")
        headers = {k.lower(): v for k, v in request.headers.items()}
        self._log.append({"path": request.path, "model": body.get("model") if isinstance(body, dict) else None,
                          "headers": headers, "body": body, "stream": False, "completed": True, "ended": True,
                          "chunks_sent": 0})
        if not headers.get("x-api-key"):
            return _json({"type": "error", "error": {"type": "authentication_error", "message": "no key"}}, 401)
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return _json({"type": "error", "error": {"type": "invalid_request_error", "message": "messages"}}, 400)
        return _json({"input_tokens": count_input_tokens(body, include_system=True)})

    async def _handle(self, request: web.Request, fmt: ModuleType) -> web.StreamResponse:
        raw = await request.read()
        try:
            body: Any = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            body = None
        is_dict = isinstance(body, dict)
        headers = {k.lower(): v for k, v in request.headers.items()}
        model = body.get("model") if is_dict else None
        record: dict[str, Any] = {
            "path": request.path,
            "model": model,
            "headers": headers,
            "body": body,
            "stream": bool(body.get("stream")) if is_dict else False,
            "completed": False,
            "ended": False,  # the handler has returned (answered, dropped or left by the client)
            "chunks_sent": 0,
        }
        self._log.append(record)
        try:
            resp: web.StreamResponse | None = fmt.check_request(headers, body)
            if resp is None:
                assert isinstance(model, str)
                behaviour, plan, fault = self._resolve(model)
                turn = Turn(model, body, record, behaviour, plan, fault, next(self._seq))
                resp = await fmt.respond(request, turn)
            if resp is None:  # deliberately dropped connection
                return web.Response()
            if not resp.prepared:
                await resp.prepare(request)
                await resp.write_eof()
        except ConnectionError:  # client went away mid-response
            record["completed"] = False
            return web.Response()
        except asyncio.CancelledError:
            record["completed"] = False
            raise
        else:
            record["completed"] = True
            return resp
        finally:
            record["ended"] = True

    async def _handle_models(self, request: web.Request) -> web.Response:
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "fake-upstream"} for m in self._scripts]
        return _json({"object": "list", "data": data})

    # ------------------------------------------------------------------ control endpoints
    async def _handle_script(self, request: web.Request) -> web.Response:
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return _json({"ok": False, "error": {"message": "body must be JSON"}}, 400)
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            return _json({"ok": False, "error": {"message": "'model' (string) is required"}}, 400)
        fields = dict(body)
        model = fields.pop("model")
        try:
            self.script(model, fields)
        except ValueError as exc:
            return _json({"ok": False, "error": {"message": str(exc)}}, 400)
        return _json({"ok": True})

    async def _handle_reset(self, request: web.Request) -> web.Response:
        self.reset()
        return _json({"ok": True})

    async def _handle_calls(self, request: web.Request) -> web.Response:
        return _json({"data": self.calls(request.query.get("model"))})


class FakeUpstreamThread:
    """Runs a FakeUpstream on its own event loop in a daemon thread; use as a context manager."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._host = host
        self._port = port
        self._upstream: FakeUpstream | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def start(self) -> FakeUpstreamThread:
        if self._thread is not None:
            raise RuntimeError("FakeUpstreamThread already started")
        self._thread = threading.Thread(target=self._run, name="fake-upstream", daemon=True)
        self._thread.start()
        self._ready.wait(timeout=30)
        if self._error is not None:
            raise RuntimeError("fake upstream failed to start") from self._error
        if self._upstream is None:
            raise RuntimeError("fake upstream did not start in time")
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None and thread.is_alive():
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
        self._thread = None

    def __enter__(self) -> FakeUpstreamThread:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        upstream: FakeUpstream | None = None
        try:
            upstream = FakeUpstream(self._host, self._port)
            loop.run_until_complete(upstream.start())
            self._upstream = upstream
        except BaseException as exc:  # reported to the starting thread
            self._error = exc
        finally:
            self._ready.set()
        try:
            if self._error is None:
                loop.run_forever()
        finally:
            try:
                if upstream is not None:
                    loop.run_until_complete(upstream.stop())
                pending = asyncio.all_tasks(loop)
                for task in pending:
                    task.cancel()
                if pending:
                    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                asyncio.set_event_loop(None)
                loop.close()

    def _call(self, fn: Callable[[], T]) -> T:
        loop = self._loop
        if loop is None or self._upstream is None:
            raise RuntimeError("FakeUpstreamThread is not running")
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                fut.set_result(fn())
            except BaseException as exc:  # re-raised in the caller thread
                fut.set_exception(exc)

        loop.call_soon_threadsafe(run)
        return fut.result(timeout=10)

    @property
    def upstream(self) -> FakeUpstream:
        if self._upstream is None:
            raise RuntimeError("FakeUpstreamThread is not running")
        return self._upstream

    @property
    def url(self) -> str:
        return self.upstream.url

    def script(self, model: str, behaviour: Behaviour | dict[str, Any]) -> None:
        b = behaviour if isinstance(behaviour, Behaviour) else Behaviour.from_dict(behaviour)
        up = self.upstream
        self._call(lambda: up.script(model, b))

    def reset(self) -> None:
        up = self.upstream
        self._call(up.reset)

    def calls(self, model: str | None = None) -> list[dict[str, Any]]:
        up = self.upstream
        return self._call(lambda: up.calls(model))
