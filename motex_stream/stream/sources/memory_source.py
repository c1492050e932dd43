"""A series of G(r) arrays produced in-process, paced like a detector: benchmarks and soak runs.

Not a stand-in for Bluesky or Tiled (the tests use the real ones); it is the source for
measuring the analysis side alone, where transport would only add noise to the numbers.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator

import numpy as np

from motex_stream.stream.frames import Frame, RunStart, RunStop, StreamItem
from motex_stream.stream.sources.base import FrameSource, SourceStats


class SeriesSource(FrameSource):
    """One run of ``n_frames`` frames ``frame(i)`` on grid ``r``, one every ``interval`` s."""

    def __init__(
        self,
        frame: Callable[[int], np.ndarray],
        r: np.ndarray,
        n_frames: int,
        *,
        interval: float | None = None,
        metadata: dict | None = None,
        uid: str | None = None,
    ) -> None:
        self.frame = frame
        self.r = np.asarray(r, dtype=float)
        self.n_frames = n_frames
        self.interval = interval
        self.metadata = dict(metadata or {})
        self.uid = uid or str(uuid.uuid4())
        self.name = f"series:{self.uid[:8]}"
        self.stats = SourceStats()

    def items(self, stop_event: threading.Event) -> Iterator[StreamItem]:
        t0 = time.time()
        yield RunStart(self.uid, t0, self.metadata)
        next_due = time.monotonic()
        for i in range(self.n_frames):
            if stop_event.is_set():
                yield RunStop(self.uid, time.time(), "abort", i)
                return
            if self.interval:
                delay = next_due - time.monotonic()
                if delay > 0:
                    stop_event.wait(delay)
                next_due += self.interval
            self.stats.add("received")
            yield Frame(self.uid, i + 1, time.time(), self.r, self.frame(i), self.metadata)
        yield RunStop(self.uid, time.time(), "success", self.n_frames)
