"""The `gateway` command: serve, demo, check-config, route; keys, teams and spend (cli_keys, cli_spend); the
learned router (cli_router)."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.cli.db import add_parser as add_db_parser
from gateway.cli.keys import add_parsers as add_key_parsers
from gateway.cli.router import add_parser as add_router_parser
from gateway.cli.spend import add_parser as add_spend_parser
from gateway.config.schema import ConfigError
from gateway.redaction import Redactor

if TYPE_CHECKING:
    from gateway.config.settings import Settings

__all__ = ["main"]


def _multiprocess_dir() -> str:
    """Prometheus multiprocess mode needs a directory, emptied at start, set before import."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or tempfile.mkdtemp(prefix="gateway-metrics-")
    shutil.rmtree(path, ignore_errors=True)
    Path(path).mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    return path


def _settings_or_none(path: str | None) -> Settings | None:
    """The validated settings, or None after printing every config problem."""
    from gateway.app import load_settings

    try:
        return load_settings(path)
    except ConfigError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return None


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    if args.workers > 1:
        _multiprocess_dir()
    from gateway.api.http_server import uvicorn_options
    from gateway.app import CONFIG_ENV, create_app
    from gateway.observability.logs import configure_logging

    settings = _settings_or_none(args.config)
    if settings is None:
        return 2
    configure_logging(Redactor(settings.secrets()), args.log_level)
    if args.workers > 1 and not (settings.redis_url or settings.database_url or settings.sqlite_path):
        logging.getLogger("gateway").warning(
            "storage is memory: each of the %d workers keeps its own keys, budgets and ledger (the SQLite file, "
            "storage.backend: auto, or redis_url shares them)", args.workers)
    common = {
        "host": args.host, "port": args.port, "log_config": None, "access_log": False,
        "log_level": args.log_level.lower(), "backlog": 2048, "proxy_headers": False,
        **uvicorn_options(settings.server),
    }
    if args.workers > 1:
        if args.config:
            os.environ[CONFIG_ENV] = str(Path(args.config).resolve())
        uvicorn.run("gateway.app:app_from_env", factory=True, workers=args.workers, **common)
    else:
        uvicorn.run(create_app(settings), **common)
    return 0


def check_config(args: argparse.Namespace) -> int:
    settings = _settings_or_none(args.config)
    if settings is None:
        return 2
    for spec in settings.models.values():
        state = "available" if spec.available else f"unavailable ({spec.unavailable_reason})"
        print(f"{spec.name:32} {spec.provider:12} {state}")
    return 0


def route(args: argparse.Namespace) -> int:
    """The routing decision for a request file, without calling any provider."""
    import asyncio
    import json

    from gateway.cache.prefix_cache import FixedTenant
    from gateway.errors import GatewayError
    from gateway.pipeline.request import parse_chat_request
    from gateway.routing.router import Router
    from gateway.tokens.counter import TokenCounter

    settings = _settings_or_none(args.config)
    if settings is None:
        return 2
    tier = settings.tiers.get(args.tier)
    if tier is None:
        print(f"gateway: unknown tier '{args.tier}' (tiers: {', '.join(settings.tiers)})", file=sys.stderr)
        return 2
    tokens = TokenCounter()
    router = Router.offline(settings, tokens)
    try:
        request = parse_chat_request(Path(args.file).read_bytes())
        counts = {enc: tokens.count_messages_in(request.messages, enc, request.tools) for enc in router.encodings(tier)}
        plan = asyncio.run(router.plan(tier, request, counts, FixedTenant("cli"), routed=False))
    except GatewayError as exc:
        print(json.dumps(exc.body(), indent=2))
        return 1
    print(json.dumps(plan.describe(), indent=2))
    return 0


def demo(args: argparse.Namespace) -> int:
    from gateway.demo.main import run_demo

    return run_demo()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gateway", description="OpenAI-compatible LLM gateway")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve", help="run the gateway")
    p.add_argument("--config", help="YAML config file (default: built-in catalog)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=4000)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=serve)
    p = sub.add_parser("check-config", help="validate a config and list its models")
    p.add_argument("config", nargs="?")
    p.set_defaults(func=check_config)
    p = sub.add_parser("route", help="show the routing decision for a request, without calling a provider")
    p.add_argument("--tier", required=True)
    p.add_argument("--file", required=True, help="a chat completion request body (JSON)")
    p.add_argument("--config", help="YAML config file (default: built-in catalog)")
    p.set_defaults(func=route)
    p = sub.add_parser("demo", help="run a simulated workload and print what it cost")
    p.set_defaults(func=demo)
    add_key_parsers(sub)
    add_spend_parser(sub)
    add_router_parser(sub)
    add_db_parser(sub)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
