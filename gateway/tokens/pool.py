"""Counting a request's prompt without stalling the event loop.

A small prompt (a body of up to `inline_bytes`) is counted where it is, with the memo that makes
a resent conversation cost a few dict lookups. A large one goes to a small pool of worker
threads (tiktoken encodes without holding the GIL, so the loop keeps serving other requests),
is encoded in pieces, and is refused with 413 once it passes the token limit or its CPU
allowance. At most `threads + queue` large prompts are in hand at once; the next gets 503 with
`retry-after`, so a flood of large prompts costs its senders, not everyone else.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

from gateway.errors import RequestTooLarge, ServiceUnavailable
from gateway.tokens.counter import TokenCounter

__all__ = ["CountingLimits", "CountingPool"]

T = TypeVar("T")


class CountingLimits(Protocol):
    """The `limits` settings the pool reads (`gateway.config.schema.LimitsConfig` is one)."""

    @property
    def count_inline_bytes(self) -> int: ...

    @property
    def max_prompt_tokens(self) -> int: ...

    @property
    def count_threads(self) -> int: ...

    @property
    def count_queue(self) -> int: ...

    @property
    def count_cpu_s(self) -> float: ...


class CountingPool:
    def __init__(self, counter: TokenCounter, limits: CountingLimits) -> None:
        self._counter = counter
        self._inline_bytes = limits.count_inline_bytes
        self._max_tokens = limits.max_prompt_tokens
        self._cpu_s = limits.count_cpu_s
        self._capacity = limits.count_threads + limits.count_queue
        self._in_hand = 0  # large prompts queued or being counted (touched on the loop only)
        self._executor = ThreadPoolExecutor(limits.count_threads, thread_name_prefix="gateway-count")

    async def count(self, messages: list[Any], tools: list[Any] | None, encodings: Sequence[str],
                    body_bytes: int) -> dict[str, int]:
        """The prompt's tokens in each of `encodings`; 413 over the token limit."""
        if body_bytes <= self._inline_bytes:
            counts = {}
            for enc in encodings:
                n = counts[enc] = self._counter.count_messages_in(messages, enc, tools)
                if n > self._max_tokens:
                    raise RequestTooLarge(f"the prompt is {n} tokens; the limit is {self._max_tokens}",
                                          param="messages")
            return counts
        return await self.offload(self._count_large, messages, tools, tuple(encodings))

    async def offload(self, work: Callable[..., T], *args: Any) -> T:
        """`work(*args)` on a worker thread (tokenising a large prompt: counting, hashing its
        blocks); 503 when the threads and their queue are full."""
        if self._in_hand >= self._capacity:
            raise ServiceUnavailable("too many large prompts are being counted; retry shortly",
                                     headers={"retry-after": "1"})
        self._in_hand += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, work, *args)
        finally:
            self._in_hand -= 1

    def _count_large(self, messages: list[Any], tools: list[Any] | None, encodings: tuple[str, ...]) -> dict[str, int]:
        """On a worker thread: one CPU allowance for all the encodings."""
        started, counts = time.thread_time(), {}
        for enc in encodings:
            left = self._cpu_s - (time.thread_time() - started)
            counts[enc] = self._counter.count_bounded(messages, enc, tools, self._max_tokens, left)
        return counts

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
