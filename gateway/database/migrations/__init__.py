"""The schema's versions, as SQL files applied in order by `gateway.database.migrate`."""
