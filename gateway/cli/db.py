"""`gateway db upgrade`: apply the schema migrations PostgreSQL (`database_url`) lacks."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

__all__ = ["add_parser"]


def upgrade(args: argparse.Namespace) -> int:
    from gateway import backends
    from gateway.app import load_settings
    from gateway.config.schema import ConfigError
    from gateway.database.migrate import upgrade as apply
    from gateway.errors import GatewayError

    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 2
    database = backends.database(settings)
    if database is None:
        print("gateway: no database_url in the config: nothing to upgrade", file=sys.stderr)
        return 2

    async def run() -> list[Any]:
        try:
            return await apply(database)
        finally:
            await database.close()

    try:
        applied = asyncio.run(run())
    except GatewayError as exc:
        print(f"gateway: {exc.message}", file=sys.stderr)
        return 1
    for migration in applied:
        print(f"applied {migration.version:04d}_{migration.name}")
    print(f"schema '{database.schema}' is up to date" + ("" if applied else " (nothing to apply)"))
    return 0


def add_parser(sub: Any) -> None:
    p = sub.add_parser("db", help="the PostgreSQL system of record")
    commands = p.add_subparsers(dest="db_command", required=True)
    up = commands.add_parser("upgrade", help="apply pending schema migrations")
    up.add_argument("--config", help="config file (default: the built-in catalog)")
    up.set_defaults(func=upgrade)
