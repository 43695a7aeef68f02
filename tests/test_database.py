"""The PostgreSQL system of record's foundation: migrations applied once, in order, by `gateway db
upgrade` and at start-up; each test in its own schema of the machine's PostgreSQL."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg
import yaml
from conftest import ROOT

from gateway.database.migrate import migrations, pending, upgrade
from gateway.database.pool import Database


def tables(url: str, schema: str) -> set[str]:
    async def run() -> set[str]:
        conn = await asyncpg.connect(url)
        try:
            rows = await conn.fetch("SELECT table_name FROM information_schema.tables WHERE table_schema = $1", schema)
            return {r["table_name"] for r in rows}
        finally:
            await conn.close()

    return asyncio.run(run())


def test_migrations_apply_once_in_order(database_url: str, pg_schema: str) -> None:
    async def run() -> tuple[list[Any], list[Any], list[Any]]:
        database = Database(database_url, pg_schema)
        try:
            before = await pending(database)
            first, again = await upgrade(database), await upgrade(database)
            return before, first, again
        finally:
            await database.close()

    before, first, again = asyncio.run(run())
    shipped = migrations()
    assert [m.version for m in shipped] == sorted(m.version for m in shipped) and shipped[0].version == 1
    assert before == first == shipped and again == []
    assert "schema_migrations" in tables(database_url, pg_schema)


def test_gateway_db_upgrade_applies_them_from_the_command_line(database_url: str, pg_schema: str,
                                                               tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump({
        "database_url": database_url, "database": {"schema_name": pg_schema},
        "models": [{"name": "m", "provider": "openai", "api_key": "k",
                    "pricing": {"input_per_mtok": 1, "output_per_mtok": 1}}]}))
    done = subprocess.run([sys.executable, "-m", "gateway", "db", "upgrade", "--config", str(config)],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    applied = "".join(f"applied {m.version:04d}_{m.name}\n" for m in migrations())
    assert applied.startswith("applied 0001_schema_version\n")
    assert done.stdout.endswith(f"{applied}schema '{pg_schema}' is up to date\n")
    again = subprocess.run([sys.executable, "-m", "gateway", "db", "upgrade", "--config", str(config)],
                           capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert again.stdout == f"schema '{pg_schema}' is up to date (nothing to apply)\n"


def test_an_unreachable_database_is_a_clear_error(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump({
        "database_url": "postgresql://postgres@127.0.0.1:9/test", "database": {"timeout_s": 1},
        "models": [{"name": "m", "provider": "openai", "api_key": "k",
                    "pricing": {"input_per_mtok": 1, "output_per_mtok": 1}}]}))
    done = subprocess.run([sys.executable, "-m", "gateway", "db", "upgrade", "--config", str(config)],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 1 and "the database (PostgreSQL) is unavailable" in done.stderr
