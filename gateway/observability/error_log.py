"""Unexpected errors in the log: one line each, and the traceback at most once per cause (the
exception's type and the line that raised it) per `every_s`, so a fault hit by every request
cannot fill the disk with the same traceback."""

from __future__ import annotations

import logging
import time

__all__ = ["ErrorLog"]

log = logging.getLogger("gateway")


class ErrorLog:
    def __init__(self, every_s: float = 60.0, max_causes: int = 1024) -> None:
        self._every_s = every_s
        self._max_causes = max_causes
        self._logged: dict[tuple[str, str, int], float] = {}  # cause -> when its traceback was last written

    def unexpected(self, where: str, exc: BaseException) -> None:
        tb = exc.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        frame = (tb.tb_frame.f_code.co_filename, tb.tb_lineno) if tb is not None else ("?", 0)
        cause = (type(exc).__qualname__, *frame)
        now = time.monotonic()
        last = self._logged.get(cause)
        if last is not None and now - last < self._every_s:
            log.error("unhandled error on %s: %s: %s (at %s:%d; traceback logged %.0f s ago)", where, cause[0], exc,
                      *frame, now - last)
            return
        if len(self._logged) >= self._max_causes:
            self._logged.clear()
        self._logged[cause] = now
        log.error("unhandled error on %s: %s: %s", where, cause[0], exc, exc_info=exc)
