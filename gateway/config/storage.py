"""Where keys, teams, settled spend and the ledger live, decided once at start-up:

    database_url set        PostgreSQL (with redis_url, Redis is its cache and hot path)
    else redis_url set      Redis, shared by every process and replica
    else storage.backend    auto or sqlite: a SQLite file, `storage.sqlite_path` (default below)
                            memory: this process's memory, gone at restart

`storage.backend` unset takes the environment variable `GATEWAY_STORAGE` (`auto`, `sqlite` or
`memory`; the test suite sets `memory`), else `auto`. The variable only chooses between SQLite and
memory. `storage.backend: sqlite` or `memory` written in the config is explicit: the `REDIS_URL`
environment variable is then not used, and `database_url` or `redis_url` in the config beside it
is a config error (one of them would be ignored).

The default file is `$XDG_DATA_HOME/llm-gateway/gateway.sqlite3` (an absolute XDG_DATA_HOME),
else `~/.local/share/llm-gateway/gateway.sqlite3`. The file and its directory are created when the
gateway starts (`gateway.database.sqlite`); here the path is only checked: a directory, or a place
that cannot be written, is a config error.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from gateway.config.schema import GatewayConfig

__all__ = ["BACKENDS", "STORAGE_ENV", "default_sqlite_path", "redis_url", "sqlite_path"]

STORAGE_ENV = "GATEWAY_STORAGE"
BACKENDS = ("auto", "sqlite", "memory")


def default_sqlite_path(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    base = env.get("XDG_DATA_HOME", "")
    root = Path(base) if os.path.isabs(base) else Path.home() / ".local" / "share"
    return root / "llm-gateway" / "gateway.sqlite3"


def redis_url(config: GatewayConfig) -> str | None:
    """`redis_url`, else the `REDIS_URL` environment variable unless `storage.backend` is explicit."""
    if config.redis_url or config.storage.backend in ("sqlite", "memory"):
        return config.redis_url or None
    return os.environ.get("REDIS_URL") or None


def _backend(config: GatewayConfig, problems: list[str]) -> str | None:
    if config.storage.backend is not None:
        return config.storage.backend
    chosen = os.environ.get(STORAGE_ENV) or "auto"
    if chosen not in BACKENDS:
        problems.append(f"{STORAGE_ENV}: must be one of 'auto', 'sqlite' or 'memory' (not {chosen!r})")
        return None
    return chosen


def _unusable(path: Path) -> str | None:
    """Why the gateway could not keep its SQLite file at `path`, or None."""
    if path.is_dir():
        return f"{path} is a directory; name a file"
    if path.exists():
        return None if os.access(path, os.R_OK | os.W_OK) else f"{path} is not readable and writable"
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        return f"cannot create {path}: {ancestor} is not a directory"
    if not os.access(ancestor, os.W_OK | os.X_OK):
        return f"cannot create {path}: {ancestor} is not writable"
    return None


def sqlite_path(config: GatewayConfig, redis_url: str | None, problems: list[str]) -> str | None:
    """The SQLite file that keeps the records (absolute), or None: PostgreSQL, Redis or memory.
    Appends what is wrong to `problems`."""
    backend = _backend(config, problems)
    shared = ("database_url", "PostgreSQL keeps keys, teams, spend and the ledger") if config.database_url else (
        ("redis_url", "Redis keeps keys, teams, spend and the ledger, shared by every process") if redis_url else None)
    if shared is not None:
        if config.storage.backend in ("sqlite", "memory"):
            problems.append(f"storage.backend: '{config.storage.backend}' cannot be used with {shared[0]} "
                            f"({shared[1]}); remove one of them")
        return None
    if backend in (None, "memory"):
        return None
    given = config.storage.sqlite_path
    path = (Path(given).expanduser() if given else default_sqlite_path()).absolute()
    problem = _unusable(path)
    if problem is not None:
        hint = "" if given else " (the default: set storage.sqlite_path or XDG_DATA_HOME)"
        problems.append(f"storage.sqlite_path: {problem}{hint}")
        return None
    return str(path)
