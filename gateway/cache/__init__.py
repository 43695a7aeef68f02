"""The two caches. The response cache (`response_*`) answers an identical deterministic request
without calling a provider; the prompt-prefix cache (`prefix_*`) knows which prompt prefixes are
warm at which provider, prices that into routing and adds Anthropic breakpoints."""
