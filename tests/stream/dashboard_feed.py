"""A dashboard subscribed to a real ZMQ publisher, and the loop that feeds it messages.

``serve_subscription`` (what ``motex-stream dashboard ADDR`` runs) on a thread, subscribed to a
:class:`ZmqPublisher` on 127.0.0.1: the set-up of the dashboard's ZMQ tests, its browser tests
and ``benchmarks/bench_dashboard.py``, written once so that each waits for the same things
(the server started, the subscriber connected) before the first message goes out.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from motex_stream.stream.dashboard import DashboardServer, serve_subscription
from motex_stream.stream.publishers.zmq_pub import ZmqPublisher


class Dashboard:
    """``serve_subscription`` of ``address`` on a thread, as ``motex-stream dashboard ADDR
    --port PORT`` runs (0: a free port); returns once its HTTP server is up."""

    def __init__(self, address: str, port: int = 0) -> None:
        self.stop = threading.Event()
        started = threading.Event()
        self.server: DashboardServer | None = None

        def on_start(server: DashboardServer) -> None:
            self.server = server
            started.set()

        self.thread = threading.Thread(
            target=serve_subscription,
            args=(address,),
            kwargs={"port": port, "stop_event": self.stop, "on_start": on_start},
            daemon=True,
        )
        self.thread.start()
        assert started.wait(10), "the dashboard server did not start"
        assert self.server is not None
        self.url: str = self.server.url

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)


@contextmanager
def published_dashboard(port: int = 0) -> Iterator[tuple[ZmqPublisher, Dashboard]]:
    """A publisher on a free 127.0.0.1 port and a dashboard subscribed to it (its subscriber
    connected: what is sent from here on arrives); both closed on the way out (the dashboard
    first, so its thread has ended when the block is left)."""
    with ZmqPublisher("tcp://127.0.0.1:0") as publisher:
        dashboard = Dashboard(publisher.address, port)
        try:
            assert publisher.wait_for_subscribers(1, timeout=10), "the dashboard did not subscribe"
            yield publisher, dashboard
        finally:
            dashboard.close()


def publish(
    publisher: ZmqPublisher, messages: Iterable[dict], subscribers: int = 1, every: float = 0.0
) -> None:
    """Send ``messages`` in order, ``every`` seconds apart, once ``subscribers`` subscribers
    are connected: a PUB socket drops what it sends before a subscriber has joined."""
    assert publisher.wait_for_subscribers(subscribers, timeout=10), "no subscriber joined"
    for message in messages:
        publisher.send_message(message)
        if every:
            time.sleep(every)
