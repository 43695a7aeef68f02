-- The Batch API (gateway/batches/store_pg.py): batches, their files, settlement claims and poll
-- turns, as in the SQLite file (gateway/database/sqlite_schema.py, version 3). A batch carries its
-- budget hold and, once settled, its exact cost: PostgreSQL keeps it across restarts and replicas.
--
-- `data` and `meta` are the records' JSON (gateway/batches/records.py), `content` a file's bytes
-- (at most `batches.max_file_bytes` each). `version` is what a write compares and sets. Times the
-- store compares (expiry, leases, turns) are PostgreSQL's clock, one clock for every replica.
-- `seq` orders a listing (newest first) as SQLite's rowid does.

CREATE TABLE batches (
    id         text PRIMARY KEY,
    seq        bigint GENERATED ALWAYS AS IDENTITY,
    owner      text NOT NULL,
    version    bigint NOT NULL CHECK (version >= 1),
    settled    boolean NOT NULL DEFAULT false,
    expires_at timestamptz,  -- NULL until settled: a running batch stays until it is settled
    data       bytea NOT NULL
);
CREATE INDEX batches_owner ON batches (owner, seq);  -- GET /v1/batches: an owner's, newest first
CREATE INDEX batches_pending ON batches (id) WHERE NOT settled;  -- what the pollers follow
CREATE INDEX batches_expiry ON batches (expires_at) WHERE expires_at IS NOT NULL;  -- the purge

CREATE TABLE batch_files (
    id         text PRIMARY KEY,
    seq        bigint GENERATED ALWAYS AS IDENTITY,
    owner      text NOT NULL,
    created_at bigint NOT NULL,  -- unix seconds (FileRecord.created_at)
    expires_at timestamptz NOT NULL,
    meta       bytea NOT NULL,
    content    bytea NOT NULL
);
CREATE INDEX batch_files_owner ON batch_files (owner, created_at, seq);  -- GET /v1/files
CREATE INDEX batch_files_expiry ON batch_files (expires_at);  -- the purge

-- A batch's settlement: one holder (token) until `until`, the lease.
CREATE TABLE batch_claims (
    id    text PRIMARY KEY,
    token text NOT NULL,
    until timestamptz NOT NULL
);

-- One process polls the upstreams per interval: the row 'poll', taken until `until`.
CREATE TABLE batch_polls (
    name  text PRIMARY KEY,
    until timestamptz NOT NULL
);
