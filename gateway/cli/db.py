"""`gateway db upgrade`: apply the schema migrations PostgreSQL (`database_url`) lacks.
`gateway db check`: reconcile Redis' live budget counters, PostgreSQL's settled spend and the
spend ledger (gateway.database.reconcile), and with `--repair` fix what can be fixed safely."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.config.settings import Settings
    from gateway.database.pool import Database
    from gateway.database.reconcile import Difference, Report

__all__ = ["add_parser"]


def _settings_and_database(args: argparse.Namespace, doing: str) -> tuple[Settings, Database] | None:
    """The settings and the database of `--config`, or None after saying why not."""
    from gateway import backends
    from gateway.app import load_settings
    from gateway.config.schema import ConfigError

    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return None
    database = backends.database(settings)
    if database is None:
        print(f"gateway: no database_url in the config: nothing to {doing}", file=sys.stderr)
        return None
    return settings, database


def upgrade(args: argparse.Namespace) -> int:
    from gateway.database.migrate import upgrade as apply
    from gateway.errors import GatewayError

    found = _settings_and_database(args, "upgrade")
    if found is None:
        return 2
    database = found[1]

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


async def _reconcile(settings: Settings, database: Database, repair: bool, in_flight_s: float) -> Report:
    from gateway.access.periods import period_of
    from gateway.database.reconcile import Reconciler

    redis = None
    if settings.redis_url:
        from gateway.runtime.redis_client import redis_client

        redis = redis_client(settings.redis_url, settings.redis_max_connections, settings.redis_pool_timeout_s)
    reconciler = Reconciler(database, redis, settings.redis_prefix, period_of,
                            ledger_days=settings.ledger.kept_days(True), in_flight_s=in_flight_s)
    try:
        report = await reconciler.check()
        return await reconciler.repair(report) if repair else report
    finally:
        await database.close()
        if redis is not None:
            await redis.aclose()


def _why(exc: BaseException, schema: str) -> str:
    import asyncpg

    from gateway.errors import GatewayError

    if isinstance(exc, asyncpg.UndefinedTableError):
        return f"schema '{schema}' lacks the gateway's tables: run `gateway db upgrade` ({exc})"
    if isinstance(exc, GatewayError):
        return exc.message
    return f"could not check: {type(exc).__name__}: {exc}"


def _line(d: Difference, repair: bool) -> str:
    from gateway.money.pricing import usd_text

    target, sign = d.figures.target, "+" if d.difference > 0 else "-"
    if d.repaired:
        action = f"repaired: {d.action}"
    elif d.repairable and not repair:
        action = f"--repair: {d.action}"
    else:
        action = d.action
    return (f"{d.what} {target.scope} {target.period}: {d.found_in} ${usd_text(d.found)}, {d.reference} "
            f"${usd_text(d.expected)}: {sign}${usd_text(abs(d.difference))} ({sign}{abs(d.difference)} pico); {action}")


def _print(report: Report, repair: bool) -> None:
    for d in report.differences:
        print(_line(d, repair))
    sources = ("Redis, " if report.redis else "") + "PostgreSQL and the ledger"
    found = len(report.differences)
    repaired = sum(d.repaired for d in report.differences)
    outcome = f"{found} difference(s)" + (f", {repaired} repaired" if repair else "") if found else "no difference"
    print(f"checked {report.keys} key and {report.teams} team counter(s) in {sources}: {outcome}")


def check(args: argparse.Namespace) -> int:
    """Exit 0: everything agrees; 1: differences (repaired or not); 2: could not check."""
    from gateway.access.keys_pg import database_errors
    from gateway.runtime.redis_errors import redis_errors

    found = _settings_and_database(args, "check")
    if found is None:
        return 2
    settings, database = found
    try:
        report = asyncio.run(_reconcile(settings, database, args.repair, args.in_flight_s))
    except (*database_errors(), *redis_errors()) as exc:
        print(f"gateway: {_why(exc, database.schema)}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        _print(report, args.repair)
    return 1 if report.differences else 0


def add_parser(sub: Any) -> None:
    p = sub.add_parser("db", help="the PostgreSQL system of record")
    commands = p.add_subparsers(dest="db_command", required=True)
    up = commands.add_parser("upgrade", help="apply pending schema migrations")
    up.add_argument("--config", help="config file (default: the built-in catalog)")
    up.set_defaults(func=upgrade)
    ck = commands.add_parser("check", help="reconcile Redis' budget counters, settled spend and the ledger")
    ck.add_argument("--config", help="config file (default: the built-in catalog)")
    ck.add_argument("--repair", action="store_true", help="fix what can be fixed safely (see docs/budgets.md)")
    ck.add_argument("--json", action="store_true", help="print the report as JSON")
    ck.add_argument("--in-flight-s", type=float, default=2.0,
                    help="records younger than this are on their way: left to the next check; a difference is "
                         "reported only if found again this much later (default 2; 0: one pass, everything)")
    ck.set_defaults(func=check)
