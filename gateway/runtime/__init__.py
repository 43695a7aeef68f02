"""Process plumbing every subsystem shares: work off the response path (`background`), the
Redis client and its errors, Lua script batches, giving freed memory back (`heap`)."""
