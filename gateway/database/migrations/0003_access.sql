-- Virtual keys, teams and the settled spend of their budgets: PostgreSQL is their system of record.
-- Redis only caches keys for authentication and holds the live budget counters, rebuilt from here
-- whenever one is missing (gateway/access/keys_recorded.py, gateway/access/budgets_pg.py).
--
-- `revision` (keys, teams) comes from one sequence and is taken again by every change, so a cached
-- copy carrying a revision is never overwritten by an older one. `updated_at` drives the re-sync
-- of the Redis cache. Money is integer pico-USD (1e-12 USD) in bigint, never a float.

CREATE SEQUENCE access_revisions;

CREATE TABLE teams (
    name          text PRIMARY KEY,
    budget_pico   bigint CHECK (budget_pico >= 0),  -- NULL: no budget
    budget_period text NOT NULL DEFAULT 'total' CHECK (budget_period IN ('daily', 'weekly', 'monthly', 'total')),
    revision      bigint NOT NULL DEFAULT nextval('access_revisions'),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX teams_updated_at ON teams (updated_at);

CREATE TABLE virtual_keys (
    id            text PRIMARY KEY,
    secret_hash   text NOT NULL UNIQUE CHECK (secret_hash ~ '^[0-9a-f]{64}$'),  -- SHA-256 hex; never the secret
    created_at    timestamptz NOT NULL,
    alias         text,
    team          text,  -- no foreign key: a key may name a team that has no record (then no team budget)
    user_name     text,  -- VirtualKey.user
    models        text[],  -- NULL: any; '{}': none
    tiers         text[],
    budget_pico   bigint CHECK (budget_pico >= 0),
    budget_period text NOT NULL DEFAULT 'total' CHECK (budget_period IN ('daily', 'weekly', 'monthly', 'total')),
    rpm           integer CHECK (rpm >= 1),
    tpm           bigint CHECK (tpm >= 1),
    expires_at    timestamptz,
    revoked       boolean NOT NULL DEFAULT false,  -- kept, never deleted: the audit trail
    revoked_at    timestamptz,
    revision      bigint NOT NULL DEFAULT nextval('access_revisions'),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX virtual_keys_listed ON virtual_keys (created_at, id);  -- GET /admin/keys, in creation order
CREATE INDEX virtual_keys_team ON virtual_keys (team) WHERE team IS NOT NULL;  -- a team's keys
CREATE INDEX virtual_keys_updated_at ON virtual_keys (updated_at);  -- the cache re-sync

-- Settled spend per budget period ('total', 'd2026-03-14', 'w2026-03-09', 'm2026-03': see
-- gateway/access/periods.py). `version` counts the batches that added to a row: a Redis counter
-- rebuilt from (spent_pico, version) already includes every settlement whose batch version is <= it.
CREATE TABLE key_spend (
    key_id     text NOT NULL,
    period     text NOT NULL,
    spent_pico bigint NOT NULL CHECK (spent_pico >= 0),
    version    bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (key_id, period)
);
CREATE INDEX key_spend_by_period ON key_spend (period, spent_pico DESC);  -- top spenders of a period

CREATE TABLE team_spend (
    team       text NOT NULL,
    period     text NOT NULL,
    spent_pico bigint NOT NULL CHECK (spent_pico >= 0),
    version    bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (team, period)
);
CREATE INDEX team_spend_by_period ON team_spend (period, spent_pico DESC);

-- One row per settlement (a budget hold's id): a settlement replayed from a journal counts once.
-- The versions say which key_spend / team_spend batch first included it.
CREATE TABLE spend_settlements (
    id           text PRIMARY KEY,
    key_id       text NOT NULL,
    key_period   text NOT NULL,
    team         text,
    team_period  text,
    amount_pico  bigint NOT NULL CHECK (amount_pico >= 0),
    spent_at     timestamptz NOT NULL,
    key_version  bigint,
    team_version bigint,
    recorded_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX spend_settlements_key ON spend_settlements (key_id, spent_at);  -- a key's settlements
CREATE INDEX spend_settlements_recorded ON spend_settlements (recorded_at);  -- pruning old ones
