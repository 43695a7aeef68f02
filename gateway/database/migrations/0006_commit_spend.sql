-- A batch of settlements committed in one call (gateway/access/spend_pg.py `SpendRecord.commit`):
-- the same steps the writer took in five statements of one transaction, now one round trip.
--   1. record the settlements (one row per id: a settlement committed again counts once);
--   2. add the new ones' amounts to key_spend, then team_spend (rows locked in that fixed order,
--      each sorted, so concurrent batches from several replicas cannot deadlock), raising each
--      touched row's version by one;
--   3. mark each new settlement with the versions of the batch that included it;
--   4. return the versions of every settlement asked for (new or committed before).
-- Settlements of $0 are not passed (the caller leaves them out).
--
-- `SET enable_seqscan = off`: every statement here reaches spend_settlements by its primary key.
-- A plan cached for the session (a pooled connection runs this for hours) is made generic after
-- five calls, from the statistics of that moment; on a table autovacuum has not yet analysed
-- those say "a few rows", and the generic plan scanned the whole table on every batch (measured:
-- 5 ms of server CPU per batch after 6,000 settlements, growing with every row).

CREATE FUNCTION commit_spend(ids text[], key_ids text[], key_periods text[], teams text[], team_periods text[],
                             amounts bigint[], spent_at timestamptz[])
RETURNS TABLE (settlement_id text, settlement_key_version bigint, settlement_team_version bigint)
LANGUAGE plpgsql SET enable_seqscan = off AS $$
DECLARE
    fresh text[];
BEGIN
    WITH inserted AS (
        INSERT INTO spend_settlements AS s (id, key_id, key_period, team, team_period, amount_pico, spent_at)
        SELECT * FROM unnest(ids, key_ids, key_periods, teams, team_periods, amounts, spent_at)
        ON CONFLICT (id) DO NOTHING
        RETURNING s.id)
    SELECT coalesce(array_agg(inserted.id), '{}') INTO fresh FROM inserted;

    WITH input AS (
        SELECT t.* FROM unnest(ids, key_ids, key_periods) AS t(id, name, period) WHERE t.id = ANY(fresh)),
    sums AS (
        SELECT t.name, t.period, sum(t.amount)::bigint AS amount
        FROM unnest(ids, key_ids, key_periods, amounts) AS t(id, name, period, amount)
        WHERE t.id = ANY(fresh) GROUP BY 1, 2),
    added AS (
        INSERT INTO key_spend AS k (key_id, period, spent_pico, version)
        SELECT sums.name, sums.period, sums.amount, 1 FROM sums ORDER BY 1, 2
        ON CONFLICT (key_id, period) DO UPDATE
        SET spent_pico = k.spent_pico + EXCLUDED.spent_pico, version = k.version + 1, updated_at = now()
        RETURNING k.key_id, k.period, k.version)
    UPDATE spend_settlements s SET key_version = added.version
    FROM input JOIN added ON added.key_id = input.name AND added.period = input.period
    WHERE s.id = input.id;

    WITH input AS (
        SELECT t.* FROM unnest(ids, teams, team_periods) AS t(id, name, period)
        WHERE t.id = ANY(fresh) AND t.name IS NOT NULL),
    sums AS (
        SELECT t.name, t.period, sum(t.amount)::bigint AS amount
        FROM unnest(ids, teams, team_periods, amounts) AS t(id, name, period, amount)
        WHERE t.id = ANY(fresh) AND t.name IS NOT NULL GROUP BY 1, 2),
    added AS (
        INSERT INTO team_spend AS k (team, period, spent_pico, version)
        SELECT sums.name, sums.period, sums.amount, 1 FROM sums ORDER BY 1, 2
        ON CONFLICT (team, period) DO UPDATE
        SET spent_pico = k.spent_pico + EXCLUDED.spent_pico, version = k.version + 1, updated_at = now()
        RETURNING k.team, k.period, k.version)
    UPDATE spend_settlements s SET team_version = added.version
    FROM input JOIN added ON added.team = input.name AND added.period = input.period
    WHERE s.id = input.id;

    RETURN QUERY SELECT s.id, s.key_version, s.team_version FROM spend_settlements s WHERE s.id = ANY(ids);
END
$$;
