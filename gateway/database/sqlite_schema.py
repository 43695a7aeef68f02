"""The tables of the embedded SQLite store (`gateway.database.sqlite`), the counterpart of the
PostgreSQL migrations `0002_ledger` and `0003_access` with the same table and column names, plus the
budget holds (which PostgreSQL leaves to Redis). `VERSION` is kept in `PRAGMA user_version`; every
statement of `SCHEMA` (version 1) is idempotent, and `UPGRADES` are applied under one write lock after
the version is read again, so processes opening a new (or older) file at once agree.

Money is integer pico-USD (SQLite INTEGER: 64 bits). Times are UTC ISO 8601 strings (the ledger's:
with microseconds, so a time range is a string comparison); hold expiries are Unix seconds.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

__all__ = ["SCHEMA", "UPGRADES", "VERSION"]

VERSION = 3

SCHEMA = """
CREATE TABLE IF NOT EXISTS teams (
    name          TEXT PRIMARY KEY,
    budget_pico   INTEGER CHECK (budget_pico >= 0),
    budget_period TEXT NOT NULL DEFAULT 'total' CHECK (budget_period IN ('daily', 'weekly', 'monthly', 'total')),
    revision      INTEGER NOT NULL,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS teams_updated_at ON teams (updated_at);

CREATE TABLE IF NOT EXISTS virtual_keys (
    id            TEXT PRIMARY KEY,
    secret_hash   TEXT NOT NULL UNIQUE,  -- SHA-256 hex; never the secret
    created_at    TEXT NOT NULL,
    alias         TEXT,
    team          TEXT,
    user_name     TEXT,
    models        TEXT,  -- a JSON array; NULL: any
    tiers         TEXT,
    budget_pico   INTEGER CHECK (budget_pico >= 0),
    budget_period TEXT NOT NULL DEFAULT 'total' CHECK (budget_period IN ('daily', 'weekly', 'monthly', 'total')),
    rpm           INTEGER,
    tpm           INTEGER,
    expires_at    TEXT,
    revoked       INTEGER NOT NULL DEFAULT 0,  -- kept, never deleted: the audit trail
    revoked_at    TEXT,
    revision      INTEGER NOT NULL,
    updated_at    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS virtual_keys_listed ON virtual_keys (created_at, id);
CREATE INDEX IF NOT EXISTS virtual_keys_updated_at ON virtual_keys (updated_at);

-- One row: the last revision given to a key or team (PostgreSQL's sequence `access_revisions`).
CREATE TABLE IF NOT EXISTS access_revisions (n INTEGER NOT NULL);
INSERT INTO access_revisions (n) SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM access_revisions);

-- Settled spend per budget period ('total', 'd2026-03-14', 'w2026-03-09', 'm2026-03').
CREATE TABLE IF NOT EXISTS key_spend (
    key_id     TEXT NOT NULL,
    period     TEXT NOT NULL,
    spent_pico INTEGER NOT NULL CHECK (spent_pico >= 0),
    updated_at TEXT NOT NULL,
    PRIMARY KEY (key_id, period)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS team_spend (
    team       TEXT NOT NULL,
    period     TEXT NOT NULL,
    spent_pico INTEGER NOT NULL CHECK (spent_pico >= 0),
    updated_at TEXT NOT NULL,
    PRIMARY KEY (team, period)
) WITHOUT ROWID;

-- One row per settlement (a budget hold's id): a settlement replayed from a journal counts once.
CREATE TABLE IF NOT EXISTS spend_settlements (
    id          TEXT PRIMARY KEY,
    key_id      TEXT NOT NULL,
    key_period  TEXT NOT NULL,
    team        TEXT,
    team_period TEXT,
    amount_pico INTEGER NOT NULL CHECK (amount_pico >= 0),
    spent_at    TEXT NOT NULL,
    recorded_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS spend_settlements_recorded ON spend_settlements (recorded_at);

-- Live budget holds, per scope ('key:<id>', 'team:<name>'); expired ones no longer count.
CREATE TABLE IF NOT EXISTS budget_holds (
    scope       TEXT NOT NULL,
    hold_id     TEXT NOT NULL,
    amount_pico INTEGER NOT NULL,
    expires_at  REAL NOT NULL,
    PRIMARY KEY (scope, hold_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS budget_holds_expiry ON budget_holds (expires_at);

-- The spend ledger (gateway/ledger/store.py `LedgerRecord`); `record_id` written once.
CREATE TABLE IF NOT EXISTS ledger (
    record_id TEXT PRIMARY KEY,
    at TEXT NOT NULL,
    request_id TEXT NOT NULL,
    key_id TEXT NOT NULL,
    key_alias TEXT NOT NULL,
    team TEXT NOT NULL,
    model TEXT NOT NULL,
    provider TEXT NOT NULL,
    tier TEXT NOT NULL,
    input_tokens INTEGER NOT NULL,
    cached_input_tokens INTEGER NOT NULL,
    cache_write_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    reasoning_tokens INTEGER NOT NULL,
    cost_input_pico INTEGER NOT NULL,
    cost_cached_input_pico INTEGER NOT NULL,
    cost_cache_write_pico INTEGER NOT NULL,
    cost_output_pico INTEGER NOT NULL,
    cost_reasoning_pico INTEGER NOT NULL,
    cost_pico INTEGER NOT NULL,
    cache TEXT NOT NULL,
    route TEXT NOT NULL,
    status TEXT NOT NULL,
    latency_ms REAL NOT NULL,
    routing_saved_pico INTEGER NOT NULL DEFAULT 0,
    cache_saved_pico INTEGER NOT NULL DEFAULT 0,
    audio_tokens INTEGER NOT NULL DEFAULT 0,
    cost_audio_pico INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS ledger_at ON ledger (at, record_id);
"""

# What takes a file from version n - 1 to n (n >= 2), one statement each, applied in order under
# one write lock after `SCHEMA` (version 1, idempotent) by `gateway.database.sqlite`.
UPGRADES: Mapping[int, tuple[str, ...]] = MappingProxyType({
    2: ("ALTER TABLE ledger ADD COLUMN service_tier TEXT NOT NULL DEFAULT 'default'",),
    3: (  # the Batch API (gateway/batches/store_sqlite.py): batches, their files, settlement claims, poll turns
        "CREATE TABLE IF NOT EXISTS batches (id TEXT PRIMARY KEY, owner TEXT NOT NULL, version INTEGER NOT NULL, "
        "settled INTEGER NOT NULL, expires_at REAL, data BLOB NOT NULL)",
        "CREATE INDEX IF NOT EXISTS batches_owner ON batches (owner)",
        "CREATE INDEX IF NOT EXISTS batches_pending ON batches (settled)",
        "CREATE TABLE IF NOT EXISTS batch_files (id TEXT PRIMARY KEY, owner TEXT NOT NULL, created_at INTEGER NOT "
        "NULL, expires_at REAL NOT NULL, meta BLOB NOT NULL, content BLOB NOT NULL)",
        "CREATE INDEX IF NOT EXISTS batch_files_owner ON batch_files (owner, created_at)",
        "CREATE TABLE IF NOT EXISTS batch_claims (id TEXT PRIMARY KEY, token TEXT NOT NULL, until REAL NOT NULL)",
        "CREATE TABLE IF NOT EXISTS batch_polls (name TEXT PRIMARY KEY, until REAL NOT NULL)",
    ),
})
