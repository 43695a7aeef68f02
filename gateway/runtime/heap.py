"""Give freed heap memory back to the operating system (glibc keeps it otherwise)."""

from __future__ import annotations

import ctypes
import ctypes.util

__all__ = ["release_free_memory"]


def release_free_memory() -> bool:
    """`malloc_trim(0)` where the C library has it (glibc); a no-op elsewhere."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    trim = getattr(ctypes.CDLL(name), "malloc_trim", None)
    return bool(trim(0)) if trim is not None else False
