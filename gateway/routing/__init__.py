"""Routing: which model serves a tier request (`router`), and what the gateway has learned
about each model (cooldowns, output lengths: `state`)."""
