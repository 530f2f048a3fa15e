"""Log a recurring condition at most once per interval per reason, with a count.

A flood of bad messages (a misconfigured publisher, an attacker) must not become a flood
of log lines. The first occurrence of a reason is logged at once; later ones are counted
and reported with the next line for that reason, at most one per `interval_s`.
Nothing of the message itself is logged: bodies can carry PII.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable


class RateLimitedLog:
    def __init__(
        self,
        logger: logging.Logger,
        message: str,
        *,
        interval_s: float = 60.0,
        level: int = logging.WARNING,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`message` is a %-format with two arguments: the reason and the count."""
        self._logger = logger
        self._message = message
        self._interval_s = interval_s
        self._level = level
        self._clock = clock
        self._lock = threading.Lock()
        self._last_logged: dict[str, float] = {}
        self._unlogged: dict[str, int] = {}

    def note(self, reason: str) -> None:
        now = self._clock()
        with self._lock:
            count = self._unlogged.get(reason, 0) + 1
            last = self._last_logged.get(reason)
            if last is not None and now - last < self._interval_s:
                self._unlogged[reason] = count
                return
            self._last_logged[reason] = now
            self._unlogged[reason] = 0
        self._logger.log(self._level, self._message, reason, count)
