"""The `gateway` command line: serve, demo, check-config, route; keys, teams and spend."""
