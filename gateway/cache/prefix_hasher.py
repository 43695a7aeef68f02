"""`prompt_blocks`, part by part and memoised: a conversation resends its history every turn, so
each part (tool definitions, a message) that follows the same prefix as before costs one dict
lookup instead of hashing its blocks again. Gives exactly what `prompt_blocks` gives (a test
checks). Bounded by the characters of the parts it remembers; the oldest entries go first.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from hashlib import blake2b
from typing import Any

from gateway.cache.prefix_blocks import BLOCK_TOKENS, PromptBlocks, prompt_parts
from gateway.tokens.counter import TokenCounter

__all__ = ["BlockHasher"]

_DIGEST = 16
_WIDTH = BLOCK_TOKENS * 4  # bytes per block ('I' arrays: 4 bytes a token)


@dataclass(frozen=True, slots=True)
class _Step:
    hashes: tuple[bytes, ...]  # blocks completed by this part
    running: Any  # blake2b state after them (copied before use)
    pending: bytes  # the part's bytes past the last complete block
    tokens: int  # tokens in the prompt so far
    size: int  # characters held by the key, for the bound


class BlockHasher:
    def __init__(self, counter: TokenCounter, max_chars: int = 4_000_000) -> None:
        self._counter = counter
        self._steps: dict[tuple[Any, ...], _Step] = {}
        self._chars = 0
        self._max_chars = max_chars
        self._lock = threading.Lock()  # large prompts are hashed on a worker thread

    def blocks(self, body: Mapping[str, Any], encoding: str) -> PromptBlocks:
        parts = prompt_parts(self._counter, body, encoding)
        running, pending, tokens = blake2b(digest_size=_DIGEST), b"", 0
        hashes: list[bytes] = []
        stable, stable_hash = 0, b""
        for i, (key, part) in enumerate(parts):
            if i == len(parts) - 1 and body.get("messages"):
                stable = tokens
                if tokens:
                    last = hashes[-1] if hashes else b""
                    stable_hash = blake2b(last + pending, digest_size=_DIGEST, person=b"stable").digest()
            memo_key = (encoding, hashes[-1] if hashes else b"", pending, key)
            step = self._steps.get(memo_key)
            if step is None:
                step = self._hash(running, pending, tokens, part)
                self._remember(memo_key, step)
            hashes.extend(step.hashes)
            running, pending, tokens = step.running.copy(), step.pending, step.tokens
        return PromptBlocks(tuple(hashes), tokens, stable, stable_hash)

    @staticmethod
    def _hash(running: Any, pending: bytes, tokens: int, part: Any) -> _Step:
        data = memoryview(pending + part.tobytes())
        running = running.copy()
        new: list[bytes] = []
        end = len(data) // _WIDTH * _WIDTH
        for start in range(0, end, _WIDTH):
            running.update(data[start:start + _WIDTH])
            new.append(running.copy().digest())
        size = len(part)
        return _Step(tuple(new), running, bytes(data[end:]), tokens + size, size)

    def _remember(self, key: tuple[Any, ...], step: _Step) -> None:
        with self._lock:
            if key in self._steps:
                return
            self._steps[key] = step
            self._chars += step.size
            while self._chars > self._max_chars:
                oldest = next(iter(self._steps))
                self._chars -= self._steps.pop(oldest).size
