"""The system of record: PostgreSQL (`database_url`) keeps what must survive anything Redis does
(keys, teams, settled spend, the ledger); versioned SQL migrations (`migrations/`) build it."""
