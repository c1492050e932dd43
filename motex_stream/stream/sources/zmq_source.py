"""Live Bluesky documents over 0MQ (bluesky's ``Publisher`` → proxy → ``RemoteDispatcher``).

0MQ drops messages silently when a consumer is slow, so this source does nothing on the
receiving loop except decode, assemble and enqueue; analysis happens on the thread that
iterates :meth:`ZmqSource.items`. Documents are msgpack (+ msgpack-numpy) because unpickling
network input would let anyone on the network run code in the service; pickle exists only as an
explicit opt-in for legacy publishers and logs a warning.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pickle
import queue
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import msgpack
import msgpack_numpy
import zmq
from bluesky.callbacks.zmq import Publisher, RemoteDispatcher

from motex_stream.stream.frames import StreamItem
from motex_stream.stream.sources.base import (
    DEFAULT_DATA_KEY,
    DEFAULT_R_KEY,
    DEFAULT_STREAM,
    DocumentAssembler,
    SourceStats,
)

logger = logging.getLogger(__name__)

DEFAULT_PREFIX = b"raw"


def msgpack_serializer(doc: Mapping[str, Any]) -> bytes:
    """Encode a document; numpy arrays keep dtype and shape (msgpack-numpy)."""
    return msgpack.packb(doc, default=msgpack_numpy.encode, use_bin_type=True)


def msgpack_deserializer(payload: bytes) -> dict[str, Any]:
    """Decode a document written by :func:`msgpack_serializer` (or any msgpack publisher)."""
    return msgpack.unpackb(
        payload, object_hook=msgpack_numpy.decode, raw=False, strict_map_key=False
    )


def make_publisher(address: str, prefix: bytes = DEFAULT_PREFIX) -> Publisher:
    """A bluesky ``Publisher`` speaking msgpack, to subscribe to a RunEngine (tests, demo).

    Its socket gets a finite LINGER: with the default (forever), unsent documents to a proxy
    that has gone away make the garbage collection of its zmq Context block the whole process
    (seen in our tests: minutes of stall long after the publisher was dropped).
    """
    publisher = Publisher(address, prefix=prefix, serializer=msgpack_serializer)
    publisher._socket.setsockopt(zmq.LINGER, 1000)  # bluesky offers no public knob for this
    return publisher


class ZmqSource:
    """Frames from live Bluesky documents relayed by a 0MQ proxy.

    ``address`` is the proxy's *out* address (``tcp://127.0.0.1:5578``). Receiving runs on
    a thread with its own asyncio loop; the RunStart/Frame/RunStop items go through an
    unbounded queue, because start and stop must never be dropped and the policy for frames
    (keep all, keep latest) belongs to the service, not to the transport.
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
    ) -> None:
        self.address = address
        self.prefix = prefix
        self.name = name or f"zmq:{address}/{prefix.decode(errors='replace')}"
        self.stats = SourceStats()
        self.ready = threading.Event()  # set once the SUB socket is connected and polling
        self._assembler = DocumentAssembler(
            data_key=data_key,
            r_key=r_key,
            stream_name=stream_name,
            stats=self.stats,
            source_name=self.name,
        )
        self._decode = self._make_decoder(allow_pickle)
        self._poll_interval = poll_interval
        self._queue: queue.SimpleQueue[StreamItem] = queue.SimpleQueue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._error: BaseException | None = None

    def _make_decoder(self, allow_pickle: bool) -> Callable[[bytes], dict[str, Any] | None]:
        """A deserializer that logs and counts bad payloads instead of printing them."""
        if allow_pickle:
            logger.warning(
                "%s: pickle deserialization enabled; any host that can reach the proxy can run "
                "code in this process",
                self.name,
            )
        loads: Callable[[bytes], Any] = pickle.loads if allow_pickle else msgpack_deserializer

        def decode(payload: bytes) -> dict[str, Any] | None:
            try:
                doc = loads(payload)
            except Exception as err:
                self.stats.add("malformed")
                logger.warning(
                    "%s: undecodable message (%d bytes): %s", self.name, len(payload), err
                )
                return None
            if not isinstance(doc, dict):
                self.stats.add("malformed")
                logger.warning("%s: message is not a document mapping", self.name)
                return None
            return doc

        return decode

    def _on_document(self, name: str, doc: dict[str, Any] | None) -> None:
        if doc is None:
            return
        for item in self._assembler.process(name, doc):
            self._queue.put(item)

    def _receive(self) -> None:
        """Thread body: run a RemoteDispatcher on a private loop until its tasks are cancelled."""
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            dispatcher = RemoteDispatcher(
                self.address, prefix=self.prefix, loop=loop, deserializer=self._decode
            )
            dispatcher.subscribe(self._on_document)
            loop.call_soon(self.ready.set)
            dispatcher.start()
        except asyncio.CancelledError:
            logger.debug("%s: receiver cancelled", self.name)
        except BaseException as err:
            self._error = err
            logger.exception("%s: receiver failed", self.name)
        finally:
            self.ready.set()  # never leave a waiter hanging
            if not loop.is_closed():
                loop.close()

    def _cancel(self, thread: threading.Thread) -> None:
        """Stop the receiver by cancelling its tasks on its own loop (thread-safe)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():

            def cancel_all() -> None:
                for task in asyncio.all_tasks(loop):
                    task.cancel()

            # RuntimeError: the loop closed in between, so the thread is already ending.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(cancel_all)
        thread.join(timeout=10)
        if thread.is_alive():
            logger.error("%s: receiver thread did not stop within 10 s", self.name)

    def items(self, stop_event: threading.Event) -> Iterator[StreamItem]:
        """Yield items as they arrive until ``stop_event`` is set (or the receiver fails)."""
        self.ready.clear()
        thread = threading.Thread(target=self._receive, name=f"{self.name}-recv", daemon=True)
        thread.start()
        try:
            while not stop_event.is_set():
                try:
                    yield self._queue.get(timeout=self._poll_interval)
                except queue.Empty:
                    if not thread.is_alive():
                        if self._error is not None:
                            raise RuntimeError(f"{self.name}: receiver failed") from self._error
                        return
        finally:
            self._cancel(thread)
            logger.info("%s: stopped; %s", self.name, self.stats.as_dict())
