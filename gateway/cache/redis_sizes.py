"""What a cache entry costs Redis in bytes, as the caches' byte bounds count it.

Estimates calibrated on Redis 7.0 (jemalloc) with `INFO memory` over thousands of entries and
rounded up, so a bound is never passed by an underestimate:
  * a response-cache entry: its value, rounded up to the allocator's size class, plus ~530
    bytes for a 64-character key (the key itself, its TTL, and its place in the bound's sorted
    set and size hash); measured 527;
  * a prefix-index block hash: ~137 bytes in a large sorted set (measured 128-137; small sets
    are packed and cost less), plus ~420 bytes per set (its key, TTL and bookkeeping).
"""

from __future__ import annotations

__all__ = ["PREFIX_MEMBER_BYTES", "allocated", "entry_charge", "prefix_set_charge"]

PREFIX_MEMBER_BYTES = 144  # one 16-byte block hash and its score in a sorted set
_PREFIX_SET_BYTES = 320  # a set's key, TTL and bookkeeping, beyond its name (3 copies of it)
_ENTRY_BYTES = 352  # a response-cache entry's key, TTL and bookkeeping, beyond its key (3 copies of it)
_SDS_HEADER = 16  # a Redis string's header and terminator, rounded up


def allocated(size: int) -> int:
    """`size` rounded up to jemalloc's size class (4 classes per power of two, 8-byte steps at
    most under 128): what Redis's allocator really takes for it."""
    if size <= 0:
        return 0
    step = 1 << max((size - 1).bit_length() - 3, 3)
    return -(-size // step) * step


def entry_charge(key: str, value: bytes) -> int:
    """The bytes a response-cache entry counts against `cache.response.max_memory_bytes`."""
    return allocated(len(value) + _SDS_HEADER) + 3 * len(key.encode()) + _ENTRY_BYTES


def prefix_set_charge(name: str, members: int) -> int:
    """The bytes one prefix-index set of `members` block hashes counts against
    `cache.prefix.max_memory_bytes` (the same figure the Lua script computes)."""
    return members * PREFIX_MEMBER_BYTES + 3 * len(name.encode()) + _PREFIX_SET_BYTES
