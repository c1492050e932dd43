"""A source iterated on a background thread, as the service does, for tests that read it.

Shared by the 0MQ source tests and the receiver fault tests, so both read a source the same way.
"""

from __future__ import annotations

import queue
import threading

from motex_stream.stream.frames import RunStop, StreamItem
from motex_stream.stream.sources.zmq_source import ZmqSource

TIMEOUT = 30.0


class Collector:
    """Iterate ``source`` on a thread; items arrive on ``items`` in the order it yields them."""

    def __init__(self, source: ZmqSource) -> None:
        self.source = source
        self.stop_event = threading.Event()
        self.items: queue.Queue[StreamItem] = queue.Queue()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        for item in self.source.items(self.stop_event):
            self.items.put(item)

    def __enter__(self) -> Collector:
        self.thread.start()
        assert self.source.ready.wait(TIMEOUT)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        self.thread.join(TIMEOUT)
        assert not self.thread.is_alive(), "source did not stop when asked"

    def next(self, timeout: float = TIMEOUT) -> StreamItem:
        return self.items.get(timeout=timeout)

    def until_stop(self, uid: str) -> list[StreamItem]:
        """Every item up to and including the stop of run ``uid``."""
        got: list[StreamItem] = []
        while True:
            item = self.next()
            got.append(item)
            if isinstance(item, RunStop) and item.uid == uid:
                return got
