"""Work that runs off a response's path (cache writes, settlements, index records): each task is
kept referenced until it finishes, so the event loop cannot drop it, and can be awaited at
shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

__all__ = ["Background"]


class Background:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def drain(self) -> None:
        """Wait for the tasks still running."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
