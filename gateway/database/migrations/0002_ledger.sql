-- The spend ledger: one row per billed request (gateway/ledger/store.py `LedgerRecord`), written
-- by `gateway/ledger/store_pg.py`. Money is integer pico-USD, tokens are counts, both bigint.
--
-- `record_id` is given to a record once, by the writer, before its first write: every retry and
-- every replay of the local journal carries the same id, so `ON CONFLICT (record_id) DO NOTHING`
-- writes each record exactly once. (`request_id` is indexed but not unique: it is the client's
-- own `x-request-id` when it sent one, and two billed requests may share it.)
CREATE TABLE ledger (
    record_id uuid PRIMARY KEY,
    at timestamptz NOT NULL,
    request_id text NOT NULL,
    key_id text NOT NULL,
    key_alias text NOT NULL,
    team text NOT NULL,
    model text NOT NULL,
    provider text NOT NULL,
    tier text NOT NULL,
    input_tokens bigint NOT NULL,
    cached_input_tokens bigint NOT NULL,
    cache_write_tokens bigint NOT NULL,
    output_tokens bigint NOT NULL,
    reasoning_tokens bigint NOT NULL,
    cost_input_pico bigint NOT NULL,
    cost_cached_input_pico bigint NOT NULL,
    cost_cache_write_pico bigint NOT NULL,
    cost_output_pico bigint NOT NULL,
    cost_reasoning_pico bigint NOT NULL,
    cost_pico bigint NOT NULL,
    cache text NOT NULL,
    route text NOT NULL,
    status text NOT NULL,
    latency_ms double precision NOT NULL,
    routing_saved_pico bigint NOT NULL DEFAULT 0,
    cache_saved_pico bigint NOT NULL DEFAULT 0,
    audio_tokens bigint NOT NULL DEFAULT 0,
    cost_audio_pico bigint NOT NULL DEFAULT 0
);

-- Time ranges (/admin/ledger pages by (at, record_id); daily aggregates; retention), and the
-- admin API's groupings within a time range.
CREATE INDEX ledger_at ON ledger (at, record_id);
CREATE INDEX ledger_request ON ledger (request_id);
CREATE INDEX ledger_key_at ON ledger (key_id, at);
CREATE INDEX ledger_team_at ON ledger (team, at);
CREATE INDEX ledger_model_at ON ledger (model, at);
CREATE INDEX ledger_tier_at ON ledger (tier, at);
