"""Live Bluesky documents over 0MQ (bluesky's ``Publisher`` → proxy → our SUB socket).

0MQ drops messages silently when a consumer is slow, so this source does nothing on the
receiving thread except check, decode, assemble and enqueue; analysis happens on the thread that
iterates :meth:`ZmqSource.items`. Documents are msgpack with numpy arrays in msgpack-numpy's
format, read by our own decoder (:mod:`.wire`): numeric arrays only, never pickle, because
unpickling network input would let anyone on the network run code in the service. pickle exists
only as an explicit opt-in for legacy publishers and logs a warning.
"""

from __future__ import annotations

import collections
import logging
import pickle
import threading
from collections.abc import Callable, Iterator
from typing import Any

import event_model
import zmq
from bluesky.callbacks.zmq import Publisher

from motex_stream.stream.config.sources import (
    DEFAULT_BACKLOG_BYTES,
    DEFAULT_BACKLOG_FRAMES,
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_RCV_HWM,
    DEFAULT_ZMQ_PREFIX,
)
from motex_stream.stream.frames import Frame, StreamItem
from motex_stream.stream.journal import RunJournal
from motex_stream.stream.ratelimit import RateLimitedLog
from motex_stream.stream.sources.base import (
    DEFAULT_DATA_KEY,
    DEFAULT_R_KEY,
    DEFAULT_STREAM,
    DocumentAssembler,
    FrameSource,
    SourceStats,
)
from motex_stream.stream.sources.wire import (
    UnsafePayloadError,
    msgpack_deserializer,
    msgpack_serializer,
)

logger = logging.getLogger(__name__)

DEFAULT_PREFIX = DEFAULT_ZMQ_PREFIX.encode()
KNOWN_DOCUMENT_NAMES = frozenset(n.name for n in event_model.DocumentNames)


__all__ = ["ZmqSource", "make_publisher", "msgpack_deserializer", "msgpack_serializer"]


def make_publisher(address: str, prefix: bytes = DEFAULT_PREFIX) -> Publisher:
    """A bluesky ``Publisher`` speaking msgpack, to subscribe to a RunEngine (tests, demo).

    Its socket gets a finite LINGER: with the default (forever), unsent documents to a proxy
    that has gone away make the garbage collection of its zmq Context block the whole process
    (seen in our tests: minutes of stall long after the publisher was dropped).
    """
    publisher = Publisher(address, prefix=prefix, serializer=msgpack_serializer)
    publisher._socket.setsockopt(zmq.LINGER, 1000)  # bluesky offers no public knob for this
    return publisher


class ZmqSource(FrameSource):
    """Frames from live Bluesky documents relayed by a 0MQ proxy.

    ``address`` is the proxy's *out* address (``tcp://127.0.0.1:5578``). A thread receives on
    its own SUB socket (bluesky's wire format: ``prefix name payload``, split on the first two
    spaces) and never stops for bad input: an unsplittable message, a name bluesky does not
    know, a payload over ``max_message_bytes``, bytes that do not decode, a payload that is not
    a document, a document of the wrong shape -- each is counted under its kind
    (``stats.malformed_kinds``), logged at a bounded rate and dropped. (bluesky's own
    ``RemoteDispatcher`` raises on an unknown name, which stopped reception.)

    Items go to :meth:`items` through a backlog bounded in frames (``backlog_frames``) and
    bytes (``backlog_bytes``); below it the SUB socket holds at most ``rcv_hwm`` messages.
    Run boundaries always pass (start and stop must never be dropped); a frame arriving at a
    full backlog is dropped and counted (``stats.overflow``), because 0MQ would drop it
    anyway, silently and without telling start from event. The receiver therefore never
    blocks, and memory stays bounded whatever the publisher does.
    """

    def __init__(
        self,
        address: str,
        *,
        prefix: bytes = DEFAULT_PREFIX,
        data_key: str = DEFAULT_DATA_KEY,
        r_key: str = DEFAULT_R_KEY,
        stream_name: str | None = DEFAULT_STREAM,
        allow_pickle: bool = False,
        poll_interval: float = 0.1,
        name: str | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        rcv_hwm: int = DEFAULT_RCV_HWM,
        backlog_frames: int = DEFAULT_BACKLOG_FRAMES,
        backlog_bytes: int = DEFAULT_BACKLOG_BYTES,
    ) -> None:
        if b" " in prefix:
            raise ValueError(f"prefix {prefix!r} may not contain a space")
        self.address = address
        self.prefix = prefix
        self.name = name or f"zmq:{address}/{prefix.decode(errors='replace')}"
        self.stats = SourceStats()
        self.ready = threading.Event()  # set once the SUB socket is connected and polling
        self.max_message_bytes = max_message_bytes
        self.rcv_hwm = rcv_hwm
        self._assembler = DocumentAssembler(
            data_key=data_key,
            r_key=r_key,
            stream_name=stream_name,
            stats=self.stats,
            source_name=self.name,
        )
        if allow_pickle:
            logger.warning(
                "%s: pickle deserialization enabled; any host that can reach the proxy can run "
                "code in this process",
                self.name,
            )
        self._loads: Callable[[bytes], Any] = pickle.loads if allow_pickle else msgpack_deserializer
        self._poll_ms = max(1, int(poll_interval * 1000))
        self._backlog = _Backlog(backlog_frames, backlog_bytes)
        self._log = RateLimitedLog(logger)
        self._error: BaseException | None = None
        self._pending: list[StreamItem] = []

    def attach_journal(self, journal: RunJournal) -> None:
        """Persist open runs in ``journal`` and take up the ones left open by a restart."""
        self._pending.extend(self._assembler.resume(journal))

    # -- receiving (own thread) -----------------------------------------------------------

    def handle_message(self, message: bytes) -> None:
        """Decode one raw 0MQ message and queue what it completes; never raises."""
        if len(message) > self.max_message_bytes:
            self._assembler.malformed(
                "oversized", "%d bytes > max_message_bytes %d", len(message), self.max_message_bytes
            )
            return
        parts = message.split(b" ", 2)
        if len(parts) != 3:
            self._assembler.malformed(
                "unsplittable", "%d bytes without 'prefix name payload'", len(message)
            )
            return
        prefix, raw_name, payload = parts
        if prefix != self.prefix:
            return  # another publisher's traffic (the SUB filter matches prefixes only)
        try:
            name = raw_name.decode("utf-8")
        except UnicodeDecodeError:
            self._assembler.malformed("bad_name", "name of %d bytes is not UTF-8", len(raw_name))
            return
        if name not in KNOWN_DOCUMENT_NAMES:
            self._assembler.malformed("unknown_name", "document name %r", name[:40])
            return
        try:
            doc = self._loads(payload)
        except UnsafePayloadError as exc:  # an object/structured array, a lying shape, ...
            self._assembler.malformed(
                "bad_document", "a %r payload refused: %s", name, str(exc)[:120]
            )
            return
        except Exception as exc:
            self._assembler.malformed(
                "undecodable",
                "a %r payload of %d bytes: %s",
                name,
                len(payload),
                f"{type(exc).__name__}: {exc}"[:120],
            )
            return
        self._assembler_items(name, doc, len(message))

    def _assembler_items(self, name: str, doc: Any, size: int) -> None:
        for item in self._assembler.process(name, doc):
            if not self._backlog.put(item, size if isinstance(item, Frame) else 0):
                self.stats.add("overflow")
                self._log.warning(
                    "overflow",
                    "%s: backlog full (%d frames, %.0f MB); frame %d of %s dropped",
                    self.name,
                    self._backlog.frames,
                    self._backlog.nbytes / 1e6,
                    getattr(item, "seq", -1),
                    getattr(item, "source", "?"),
                )

    def _receive(self, stop_event: threading.Event) -> None:
        """Thread body: receive until ``stop_event`` is set; only a broken socket ends it."""
        context = zmq.Context()
        socket = context.socket(zmq.SUB)
        try:
            socket.setsockopt(zmq.RCVHWM, self.rcv_hwm)
            socket.setsockopt(zmq.LINGER, 0)
            socket.connect(self.address)
            socket.setsockopt(zmq.SUBSCRIBE, self.prefix + b" ")
            self.ready.set()
            while not stop_event.is_set():
                if not socket.poll(self._poll_ms, zmq.POLLIN):
                    continue
                while True:  # drain what is there before looking at the stop flag again
                    try:
                        message = socket.recv(zmq.NOBLOCK, copy=True)
                    except zmq.Again:
                        break
                    try:
                        self.handle_message(message)
                    except Exception:  # a bug of ours: log it, keep receiving
                        logger.exception("%s: unexpected error on one message", self.name)
        except BaseException as err:
            self._error = err
            logger.exception("%s: receiver failed", self.name)
        finally:
            self.ready.set()  # never leave a waiter hanging
            socket.close(linger=0)
            context.term()

    def drain_backlog(self) -> list[StreamItem]:
        """Take what was received but not yet handed over (the service counts those frames as
        abandoned at shutdown, so none vanishes uncounted). Call after :meth:`items` ended."""
        pending, self._pending = self._pending, []
        return pending + self._backlog.drain()

    # -- consuming (the service's receiver thread) ---------------------------------------

    def items(self, stop_event: threading.Event) -> Iterator[StreamItem]:
        """Yield items as they arrive until ``stop_event`` is set (or the receiver fails)."""
        self.ready.clear()
        self._error = None
        inner_stop = threading.Event()
        thread = threading.Thread(
            target=self._receive, args=(inner_stop,), name=f"{self.name}-recv", daemon=True
        )
        thread.start()
        try:
            while self._pending and not stop_event.is_set():
                yield self._pending.pop(0)
            while not stop_event.is_set():
                item = self._backlog.get(self._poll_ms / 1000)
                if item is not None:
                    yield item
                elif not thread.is_alive():
                    if self._error is not None:
                        raise RuntimeError(f"{self.name}: receiver failed") from self._error
                    return
        finally:
            inner_stop.set()
            thread.join(timeout=10)
            if thread.is_alive():
                logger.error("%s: receiver thread did not stop within 10 s", self.name)
            logger.info("%s: stopped; %s", self.name, self.stats.as_dict())


class _Backlog:
    """A FIFO bounded in frames and bytes; run boundaries are always accepted."""

    def __init__(self, max_frames: int, max_bytes: int) -> None:
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        self.frames = 0
        self.nbytes = 0
        self._items: collections.deque[tuple[StreamItem, int]] = collections.deque()
        self._cond = threading.Condition()

    def put(self, item: StreamItem, size: int) -> bool:
        with self._cond:
            if size and (self.frames >= self.max_frames or self.nbytes + size > self.max_bytes):
                return False
            self._items.append((item, size))
            if size:
                self.frames += 1
                self.nbytes += size
            self._cond.notify()
            return True

    def drain(self) -> list[StreamItem]:
        with self._cond:
            items = [item for item, _ in self._items]
            self._items.clear()
            self.frames = self.nbytes = 0
            return items

    def get(self, timeout: float) -> StreamItem | None:
        with self._cond:
            if not self._items:
                self._cond.wait(timeout)
            if not self._items:
                return None
            item, size = self._items.popleft()
            if size:
                self.frames -= 1
                self.nbytes -= size
            return item
