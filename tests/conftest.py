"""Real parts on loopback: the fake upstream as a real HTTP server, the gateway as a real
`gateway serve` process under uvicorn (`Gateway`) or in this test's event loop through
`httpx.ASGITransport` (`in_process`), and the official openai clients.

Redis: `REDIS_URL` if set, else a private `redis-server` on a free port for the session (never
a Redis these tests did not start). A skipped test fails the run in CI (`CI=true`).

Storage: the session sets `GATEWAY_STORAGE=memory` (inherited by every gateway process it starts),
so a config without `database_url` and `redis_url` keeps keys, spend and the ledger in memory, not
in the user's SQLite file; a test that wants SQLite says `storage: {backend: sqlite, sqlite_path:
...}` (tests/test_storage_sqlite.py)."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import openai
import pytest
import yaml

from gateway.fake_upstream import FakeUpstreamThread

ROOT = Path(__file__).resolve().parent.parent
os.environ["GATEWAY_STORAGE"] = "memory"  # never the user's own SQLite file (see above)
UPSTREAM_KEY = "sk-upstream-secret-0123456789abcdef"
ANTHROPIC_KEY = "sk-ant-upstream-secret-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Gateway:
    """A `gateway serve` subprocess with its own config, port and log file."""

    def __init__(self, config: dict[str, Any] | None, workers: int = 1, env: dict[str, str] | None = None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="gw-test-"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.dir / "gateway.log"
        args = [sys.executable, "-m", "gateway", "serve", "--port", str(self.port), "--workers", str(workers)]
        if config is not None:
            (self.dir / "config.yaml").write_text(yaml.safe_dump(config))
            args += ["--config", str(self.dir / "config.yaml")]
        full_env = {k: v for k, v in os.environ.items() if k not in ("PROMETHEUS_MULTIPROC_DIR", "REDIS_URL")}
        full_env.update(env or {})  # Redis only where a test's config asks for it
        if workers > 1:
            full_env["PROMETHEUS_MULTIPROC_DIR"] = str(self.dir / "metrics")
        self._log = open(self.log_path, "wb")  # noqa: SIM115
        self._clients: list[openai.OpenAI] = []  # closed by stop(): no socket is left to the GC
        ops = (config or {}).get("metrics_token") or (config or {}).get("master_key")
        self.ops_headers = {"Authorization": f"Bearer {ops}"} if ops else {}  # for /metrics
        self.proc = subprocess.Popen(args, cwd=ROOT, env=full_env, stdout=self._log, stderr=subprocess.STDOUT)
        self._wait_ready()

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"gateway did not start:\n{self.logs()}")

    def client(self, **kw: Any) -> openai.OpenAI:
        kw.setdefault("max_retries", 0)
        kw.setdefault("api_key", "client-key")
        client = openai.OpenAI(base_url=f"{self.url}/v1", **kw)
        self._clients.append(client)
        return client

    def logs(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def metrics(self) -> str:
        response = httpx.get(f"{self.url}/metrics", headers=self.ops_headers)
        assert response.status_code == 200, response.text
        return response.text

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of `name` whose labels include `labels`."""
        return metric_value(self.metrics(), name, **labels)

    def stop(self) -> None:
        for client in self._clients:
            client.close()
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def metric_value(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` in Prometheus text whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        sample, _, value = line.rpartition(" ")
        metric_name, _, label_text = sample.partition("{")
        if metric_name != name:
            continue
        found = dict(part.split("=", 1) for part in label_text.rstrip("}").split(",") if "=" in part)
        if all(found.get(k) == f'"{v}"' for k, v in labels.items()):
            total += float(value)
    return total


class InProcess:
    """A gateway app in the test's own event loop: `client` reaches it through ASGI (no socket),
    `state` is its AppState, and `drain()` waits for its background work (settlements, cache
    writes, index records) to land, so a test never sleeps waiting for it."""

    def __init__(self, app: Any, client: httpx.AsyncClient) -> None:
        self.app = app
        self.client = client
        self.state = app.api.state.gw

    def openai(self, **kw: Any) -> openai.AsyncOpenAI:
        kw.setdefault("max_retries", 0)
        kw.setdefault("api_key", "client-key")
        return openai.AsyncOpenAI(base_url="http://gateway.test/v1", http_client=self.client, **kw)

    async def drain(self) -> None:
        await self.state.background.drain()
        await self.state.stats.flush()
        await self.state.ledger.flush()

    def metric(self, name: str, **labels: str) -> float:
        return metric_value(self.state.metrics.render().decode(), name, **labels)


@pytest.fixture(scope="session")
def price_table() -> Any:
    from gateway.money.price_table import load_price_table

    return load_price_table()


@pytest.fixture
def in_process(price_table: Any) -> Callable[[dict[str, Any]], AbstractAsyncContextManager[InProcess]]:
    """`async with in_process(config) as gw:` a gateway built by `create_app` from `config`, its
    lifespan running, answering `gw.client` through `httpx.ASGITransport`."""
    from gateway.app import create_app
    from gateway.config.schema import parse_config
    from gateway.config.settings import resolve_settings

    @asynccontextmanager
    async def start(config: dict[str, Any]) -> AsyncIterator[InProcess]:
        app = create_app(resolve_settings(parse_config(config), price_table))
        async with app.api.router.lifespan_context(app.api):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test", timeout=30) as client:
                yield InProcess(app, client)

    return start


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """In CI a skipped test is a failure: CI installs everything the tests need."""
    del exitstatus, config
    skipped = terminalreporter.stats.get("skipped", [])
    if os.environ.get("CI") == "true" and skipped:
        terminalreporter.write_line(f"CI: {len(skipped)} test(s) skipped; CI must run them all", red=True)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    if os.environ.get("CI") == "true" and skipped and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def model(name: str, provider: str, upstream: FakeUpstreamThread, **extra: Any) -> dict[str, Any]:
    base = upstream.url + ("/v1" if provider != "anthropic" else "")
    key = ANTHROPIC_KEY if provider == "anthropic" else UPSTREAM_KEY
    return {"name": name, "provider": provider, "api_base": base, "api_key": key, **extra}


def standard_config(upstream: FakeUpstreamThread) -> dict[str, Any]:
    """Prices set by override so every expected figure in the tests is known."""
    return {
        "max_body_bytes": 65536,
        "models": [
            model("gpt-test", "openai", upstream, upstream_model="gpt-4o-test",
                  pricing={"input_per_mtok": 2.5, "output_per_mtok": 10, "cached_input_per_mtok": 1.25}),
            model("reasoner-test", "openai", upstream, upstream_model="o3-test",
                  pricing={"input_per_mtok": 1.1, "output_per_mtok": 4.4, "reasoning_per_mtok": 12}),
            model("tiered-test", "openai", upstream, upstream_model="tiered-up",
                  pricing={"input_per_mtok": 1, "output_per_mtok": 2,
                           "tiers": [{"above_input_tokens": 1000, "input_per_mtok": 4, "output_per_mtok": 8}]}),
            model("slow-test", "openai", upstream, upstream_model="slow-up", timeout_s=0.5,
                  pricing={"input_per_mtok": 1, "output_per_mtok": 1}),
            model("claude-test", "anthropic", upstream, upstream_model="claude-up",
                  pricing={"input_per_mtok": 3, "output_per_mtok": 15, "cached_input_per_mtok": 0.3,
                           "cache_write_per_mtok": 3.75, "cache_write_1h_per_mtok": 6}),
            model("down-test", "openai", upstream, api_base="http://127.0.0.1:9/v1",
                  pricing={"input_per_mtok": 1, "output_per_mtok": 1}),
            {"name": "nokey-test", "provider": "openai", "api_key": "${GATEWAY_TEST_UNSET_KEY}",
             "pricing": {"input_per_mtok": 1, "output_per_mtok": 1}},
        ],
    }


def _redis_answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def start_redis_server(port: int, data_dir: str | Path | None = None) -> subprocess.Popen[bytes]:
    """A private redis-server on `port`, answering when this returns (for tests that stop or fill
    Redis: never the shared one). With `data_dir` it keeps an append-only file there, so a restart
    on the same port and directory keeps what it had."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("this test needs its own redis-server binary (apt-get install redis-server)")
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    args += (["--dir", str(data_dir), "--appendonly", "yes", "--appendfsync", "always"] if data_dir
             else ["--appendonly", "no"])
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not _redis_answers("127.0.0.1", port):
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait(5)
            pytest.fail("a private redis-server did not start")
        time.sleep(0.05)
    return proc


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """REDIS_URL if set, else a private redis-server of this session's on a free port."""
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
        return
    if shutil.which("redis-server") is None:
        pytest.fail("these tests need Redis: set REDIS_URL or install redis-server (apt-get install redis-server)")
    port = free_port()
    proc = start_redis_server(port)
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="session")
def database_url() -> str:
    """DATABASE_URL if set, else the machine's PostgreSQL (127.0.0.1:5432, trust auth, database
    `test`); a test that needs it fails (never skips) when it cannot be reached."""
    url = os.environ.get("DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/test"
    try:
        socket.create_connection((urlsplit(url).hostname or "127.0.0.1", urlsplit(url).port or 5432), 2).close()
    except OSError as exc:
        pytest.fail(f"these tests need PostgreSQL at {url} (set DATABASE_URL): {exc}")
    return url


@pytest.fixture
def pg_schema(database_url: str) -> Iterator[str]:
    """A schema of this test's own (dropped after it), for `database.schema_name`."""
    import asyncpg

    name = f"t_{uuid.uuid4().hex[:12]}"

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run(f"CREATE SCHEMA {name}"))
    yield name
    asyncio.run(run(f"DROP SCHEMA {name} CASCADE"))


@pytest.fixture(scope="session")
def upstream() -> Iterator[FakeUpstreamThread]:
    with FakeUpstreamThread() as fake:
        yield fake


@pytest.fixture(autouse=True)
def _clean_upstream(upstream: FakeUpstreamThread) -> None:
    upstream.reset()


@pytest.fixture(scope="session")
def gateway(upstream: FakeUpstreamThread) -> Iterator[Gateway]:
    gw = Gateway(standard_config(upstream))
    yield gw
    gw.stop()
