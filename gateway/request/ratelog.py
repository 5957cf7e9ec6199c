"""A log line per kind of event and time window, with a count, instead of one per request."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable


class RateLimitedLog:
    """Logs the first event of each `key` per `window_s`, and how many were suppressed since.

    For events any caller can trigger at will (a refused token, an undecodable body): the log
    grows by one line per key and window whatever the request rate. Keys must come from a
    fixed set (a reason label), never from request data, so that the table stays small.
    """

    def __init__(
        self,
        logger: logging.Logger,
        window_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = logger
        self._window_s = window_s
        self._clock = clock
        self._lock = threading.Lock()
        self._next: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def log(self, level: int, key: str, message: str, *args: object) -> bool:
        """Log `message % args` unless `key` was logged within the window; True if logged."""
        now = self._clock()
        with self._lock:
            if now < self._next.get(key, 0.0):
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return False
            self._next[key] = now + self._window_s
            suppressed = self._suppressed.pop(key, 0)
        if suppressed:
            message += " (and %d more like it in the last %.0f s, not logged)"
            args = (*args, suppressed, self._window_s)
        self._log.log(level, message, *args)
        return True
