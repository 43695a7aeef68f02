-- The first version: nothing but the record of versions (created by the runner itself).
-- Later versions add the gateway's tables.
SELECT 1;
