"""Log lines at a bounded rate: a flood of bad input must not become a flood of log lines.

A beamline service can receive thousands of broken messages a second (a misconfigured
publisher, a port scanner). Each is counted in a metric; the log gets the first occurrence of
each kind at once and then at most one line per ``interval`` seconds per kind, saying how many
were suppressed in between, so the log stays readable and the disk does not fill.
"""

from __future__ import annotations

import logging
import threading
import time


class RateLimitedLog:
    """``log(kind, msg, *args)``: at most one line per ``interval`` seconds for each kind."""

    def __init__(self, logger: logging.Logger, interval: float = 10.0) -> None:
        self._logger = logger
        self._interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._lock = threading.Lock()

    def log(self, level: int, kind: str, msg: str, *args: object) -> bool:
        """Log ``msg % args`` unless ``kind`` was logged less than ``interval`` s ago."""
        now = time.monotonic()
        with self._lock:
            last = self._last.get(kind)
            if last is not None and now - last < self._interval:
                self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
                return False
            self._last[kind] = now
            suppressed = self._suppressed.pop(kind, 0)
        if suppressed:
            msg = f"{msg} (+{suppressed} more of this kind in the last {self._interval:.0f} s)"
        self._logger.log(level, msg, *args)
        return True

    def warning(self, kind: str, msg: str, *args: object) -> bool:
        return self.log(logging.WARNING, kind, msg, *args)
