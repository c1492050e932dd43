"""ZMQ PUB sink for v1 messages, and the matching subscriber for consumers and tests.

Wire: multipart ``[topic, json]`` where ``topic`` is the model name followed by one space
(UTF-8, ``b"keggin "``) and ``json`` is the message from
:func:`motex_stream.stream.messages.encode`. Topic-per-model lets a dashboard subscribe to one
starting model with ZMQ's own filter; because that filter matches prefixes, the terminator
(a character model names cannot contain, as in Bluesky's own ``b"raw "``) keeps a subscriber
to ``keggin`` from also getting ``keggin-109725``. Subscribe with :func:`topic` of the model,
or to ``b""`` for every model.

The socket is an XPUB (a PUB that also hears subscriptions) so a caller can wait until a
consumer is connected: ZMQ drops whatever is published before a subscriber joins (the "slow
joiner"), which otherwise makes the first frames of a run vanish from a freshly started view.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from threading import Event
from types import TracebackType
from typing import Any

import zmq

from motex_stream.stream.config.sinks import DEFAULT_PUB_BIND
from motex_stream.stream.frames import RunStart, RunStop
from motex_stream.stream.messages import PublishedFrame, decode, encode, to_json
from motex_stream.stream.publishers.base import Sink

log = logging.getLogger(__name__)

DEFAULT_BIND = DEFAULT_PUB_BIND
#: A received message larger than this is dropped unparsed: a published frame is kilobytes
#: (a 10k-atom model with its fit curve stays under 2 MB), so 16 MiB only stops abuse.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
#: Ends every topic; not allowed in model names (``[A-Za-z0-9_.-]``), so no name prefixes another.
TOPIC_TERMINATOR = " "


def topic(model: str) -> bytes:
    """The ZMQ topic frame of ``model``: what publishers send and subscribers filter on."""
    return (model + TOPIC_TERMINATOR).encode()


def model_of_topic(frame: bytes) -> str:
    """The model name of a received topic frame (the terminator removed)."""
    return frame.decode().removesuffix(TOPIC_TERMINATOR)


class ZmqPublisher(Sink):
    """Publish each message on ``[model, json]``; boundaries are not sent (messages carry seq)."""

    def __init__(
        self,
        bind: str = DEFAULT_BIND,
        *,
        context: zmq.Context | None = None,
        hwm: int = 1000,
        name: str = "ZmqPublisher",
    ) -> None:
        self.name = name
        self._own_context = context is None
        self._context = context or zmq.Context()
        self._socket = self._context.socket(zmq.XPUB)
        self._socket.setsockopt(zmq.XPUB_VERBOSE, 1)  # hear every subscribe, not only new topics
        self._socket.setsockopt(zmq.SNDHWM, hwm)  # bounded memory: a stuck consumer loses frames
        self._socket.setsockopt(zmq.LINGER, 500)
        self._socket.bind(bind)
        self.address: str = self._socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self.sent = 0
        self._subscriptions = 0
        log.info("publishing contributions on %s", self.address)

    # -- Sink protocol -------------------------------------------------------------------

    def on_run_start(self, start: RunStart) -> None:
        """Nothing to send: consumers group messages by ``source``."""

    def publish(self, published: PublishedFrame) -> None:
        """Send the frame's v1 message on its model's topic."""
        self._send(published.model, to_json(published))

    def on_run_stop(self, stop: RunStop) -> None:
        """Nothing to send."""

    def close(self) -> None:
        if not self._socket.closed:
            self._socket.close()
        if self._own_context:
            self._context.term()

    # -- helpers -------------------------------------------------------------------------

    def send_message(self, message: Mapping[str, Any]) -> None:
        """Send an already-built v1 message (tools and tests that have no analysed frame)."""
        self._send(str(message["model"]), encode(message))

    def _send(self, model: str, payload: bytes) -> None:
        self._drain_subscriptions()
        self._socket.send_multipart([topic(model), payload])
        self.sent += 1

    def wait_for_subscribers(self, n: int = 1, timeout: float = 5.0) -> bool:
        """Block until ``n`` subscriptions arrived (True) or ``timeout`` passed (False).

        Call it from the thread that owns the publisher, before the service starts publishing.
        """
        deadline = time.monotonic() + timeout
        while self._subscriptions < n:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if self._socket.poll(int(left * 1000) + 1, zmq.POLLIN):
                self._drain_subscriptions()
        return True

    def _drain_subscriptions(self) -> None:
        while True:
            try:
                frame = self._socket.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            if frame[:1] == b"\x01":
                self._subscriptions += 1
                log.debug("subscriber joined for topic %r", frame[1:])

    def __enter__(self) -> ZmqPublisher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class Subscriber:
    """A SUB socket connected at construction, so nothing published afterwards is missed.

    ``topics`` are model names, matched exactly (each is subscribed with its terminator);
    empty means every model.
    Messages that fail :func:`~motex_stream.stream.messages.validate_message`, do not parse
    (nesting too deep for the parser included) or exceed ``max_message_bytes`` are logged,
    counted in ``invalid``, passed to ``on_invalid`` (a consumer's own counter) and skipped: a
    consumer must survive a newer, broken or hostile publisher.
    """

    def __init__(
        self,
        address: str,
        topics: Iterable[str] = (),
        *,
        context: zmq.Context | None = None,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        on_invalid: Callable[[str], None] | None = None,
    ) -> None:
        self._max_bytes = max_message_bytes
        self._on_invalid = on_invalid
        self._own_context = context is None
        self._context = context or zmq.Context()
        self._socket = self._context.socket(zmq.SUB)
        self._socket.setsockopt(zmq.LINGER, 0)
        for filter_ in [topic(t) for t in topics] or [b""]:
            self._socket.setsockopt(zmq.SUBSCRIBE, filter_)
        self._socket.connect(address)
        self.invalid = 0

    def recv(self, timeout: float | None = None) -> tuple[str, dict[str, Any]] | None:
        """The next valid ``(topic, message)``, or None if ``timeout`` seconds pass first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait_ms = -1 if deadline is None else max(0, int((deadline - time.monotonic()) * 1000))
            if not self._socket.poll(wait_ms, zmq.POLLIN):
                return None
            parts = self._socket.recv_multipart()
            if len(parts) != 2:
                self._invalid(f"a {len(parts)}-part ZMQ message (expected [topic, json])")
            elif len(parts[1]) > self._max_bytes:
                self._invalid(f"{len(parts[1])} bytes > max_message_bytes {self._max_bytes}")
            else:
                try:
                    return model_of_topic(parts[0]), decode(parts[1])
                except (ValueError, UnicodeDecodeError, RecursionError) as exc:
                    self._invalid(f"an invalid message: {str(exc)[:200]}")
            if deadline is not None and time.monotonic() >= deadline:
                return None

    def _invalid(self, why: str) -> None:
        self.invalid += 1
        log.warning("ignoring %s", why)
        if self._on_invalid is not None:
            self._on_invalid(why)

    def close(self) -> None:
        if not self._socket.closed:
            self._socket.close()
        if self._own_context:
            self._context.term()

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def subscribe(
    address: str,
    topics: Iterable[str] = (),
    *,
    timeout: float | None = None,
    max_messages: int | None = None,
    stop_event: Event | None = None,
    on_invalid: Callable[[str], None] | None = None,
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield ``(topic, message)`` until ``max_messages``, a ``timeout`` gap, or ``stop_event``.

    The socket connects on the first ``next()``; use :class:`Subscriber` directly when the
    connection must exist before the publisher starts. ``on_invalid`` as for
    :class:`Subscriber`: a consumer's own count of what was dropped before it saw it.
    """
    count = 0
    with Subscriber(address, topics, on_invalid=on_invalid) as sub:
        waited = 0.0
        while max_messages is None or count < max_messages:
            if stop_event is not None and stop_event.is_set():
                return
            item = sub.recv(0.1)
            if item is None:
                waited += 0.1
                if timeout is not None and waited >= timeout:
                    return
                continue
            waited = 0.0
            count += 1
            yield item
