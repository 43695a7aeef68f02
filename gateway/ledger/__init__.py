"""The spend ledger: one record per billed request (`record`, `store`), the daily spend
aggregates (`spend_stats`), and reading them back (`report`)."""
