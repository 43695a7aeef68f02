-- The service tier each ledger row was billed at (default | flex | priority | batch): the price of
-- a usage depends on it (flex and batch are about half the default price, priority about twice).
ALTER TABLE ledger ADD COLUMN service_tier text NOT NULL DEFAULT 'default';
