"""CPU headroom of the analysis worker, and whether each model keeps up with its input.

The service analyses frames on one worker thread. :class:`Headroom` is told when each
frame's analysis started and finished and when the frame was received, and answers

* the worker's **utilisation**: busy seconds per wall second over the last ``window_s``
  (exported as ``motex_cpu_utilisation``; near 1 means no headroom left), and
* per model, whether it **keeps up**: over its last frames, the mean analysis time against
  the mean time between their arrivals. When analysing takes longer than frames take to come,
  the backlog grows without bound (policy ``all``) or frames are dropped (``latest``); a
  warning says so, at most once per ``warn_every_s`` per model.

Only for live input: an unpaced replay (``paced=False``) reads its whole run at once by
design, so frames "arrive every 0.000 s" and no backlog grows beyond the finite run; the
verdict is logged at DEBUG there, not as a warning.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable

log = logging.getLogger(__name__)


class Headroom:
    def __init__(
        self,
        window_s: float = 10.0,
        frames: int = 20,
        warn_every_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window_s = float(window_s)
        self.frames = int(frames)
        self.warn_every_s = float(warn_every_s)
        self._clock = clock
        self._busy: deque[tuple[float, float]] = deque()  # (start, end) of each analysis
        self._first: float | None = None
        self._per_model: dict[str, deque[tuple[float, float]]] = {}  # (received, busy s)
        self._warned: dict[str, float] = {}

    def utilisation(self, now: float | None = None) -> float:
        """Busy seconds per wall second of the worker over the last ``window_s``."""
        now = self._clock() if now is None else now
        if self._first is None:
            return 0.0
        lo = now - self.window_s
        while self._busy and self._busy[0][1] <= lo:
            self._busy.popleft()
        busy = sum(end - max(start, lo) for start, end in self._busy)
        wall = min(self.window_s, now - self._first)
        return min(1.0, busy / wall) if wall > 0 else 0.0

    def keeps_up(self, model: str) -> tuple[bool, float, float]:
        """(keeps up, mean analysis seconds, mean seconds between arrivals) for ``model``
        over its last frames; (True, ...) until there are enough frames to tell."""
        q = self._per_model.get(model)
        if q is None or len(q) < 5:
            return True, float("nan"), float("nan")
        interval = (q[-1][0] - q[0][0]) / (len(q) - 1)
        busy = sum(b for _, b in q) / len(q)
        return busy <= interval, busy, interval

    def record(
        self, model: str, received: float, started: float, finished: float, paced: bool = True
    ) -> float:
        """Note one analysed frame (monotonic seconds); returns the worker's utilisation.

        ``paced``: whether the frame came from input with a pace of its own (a live source, a
        paced replay); only then is falling behind a warning."""
        if self._first is None:
            self._first = started
        self._busy.append((started, finished))
        q = self._per_model.setdefault(model, deque(maxlen=self.frames))
        q.append((received, finished - started))
        ok, busy, interval = self.keeps_up(model)
        if not ok:
            last = self._warned.get(model)
            if last is None or finished - last >= self.warn_every_s:
                self._warned[model] = finished
                log.log(
                    logging.WARNING if paced else logging.DEBUG,
                    "model %s cannot keep up: analysing a frame takes %.3f s, frames arrive "
                    "every %.3f s (%.1f frames/s in, %.1f frames/s possible); the backlog grows",
                    model,
                    busy,
                    interval,
                    1.0 / interval if interval > 0 else float("inf"),
                    1.0 / busy if busy > 0 else float("inf"),
                )
        return self.utilisation(finished)
