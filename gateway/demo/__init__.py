"""`gateway demo`: the real gateway against simulated providers, no keys and no Redis needed."""
