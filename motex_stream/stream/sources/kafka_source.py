"""Bluesky documents from Kafka topics (the lossless transport some facilities run).

Needs the ``kafka`` extra (bluesky-kafka); documents become frames in the shared
:class:`~motex_stream.stream.sources.base.DocumentAssembler`, as for 0MQ and Tiled.
"""

from __future__ import annotations

import inspect
import logging
import queue
import threading
from collections.abc import Iterator, Mapping
from typing import Any

from motex_stream.stream.frames import StreamItem
from motex_stream.stream.sources.base import (
    DocumentAssembler,
    FrameSource,
    SourceConfigError,
    SourceStats,
)
from motex_stream.stream.sources.wire import UnsafePayloadError
from motex_stream.stream.sources.zmq_source import msgpack_deserializer

logger = logging.getLogger(__name__)

_REFUSED = "motex:refused"  # the name a refused Kafka payload is handed on under


class _StopPollingError(Exception):
    """Raised between Kafka polls to leave an older bluesky-kafka's blocking loop."""


class KafkaSource(FrameSource):
    """Bluesky documents from Kafka topics (the lossless transport some facilities run).

    Needs the ``kafka`` extra (bluesky-kafka). As for 0MQ, polling runs on its own thread and
    items reach :meth:`items` through a queue. Not exercised by the test suite (no broker on
    the test machine).
    """

    def __init__(
        self,
        topics: list[str],
        bootstrap_servers: str,
        group_id: str = "motex-stream",
        *,
        consumer_config: Mapping[str, Any] | None = None,
        name: str | None = None,
        **document_options: Any,
    ) -> None:
        try:
            import bluesky_kafka
        except ImportError as err:
            raise SourceConfigError(
                "the kafka source needs bluesky-kafka: pip install 'motex-stream[kafka]'"
            ) from err
        self.name = name or f"kafka:{','.join(topics)}"
        self.stats = SourceStats()
        self._queue: queue.SimpleQueue[StreamItem] = queue.SimpleQueue()
        self._assembler = assembler = DocumentAssembler(
            stats=self.stats, source_name=self.name, **document_options
        )

        def on_document(name: str, doc: dict[str, Any]) -> None:
            if name == _REFUSED:
                return  # counted by _deserialize
            for item in assembler.process(name, doc):
                self._queue.put(item)

        self._dispatcher = bluesky_kafka.RemoteDispatcher(
            topics=list(topics),
            bootstrap_servers=bootstrap_servers,
            group_id=group_id,
            consumer_config=dict(consumer_config or {"auto.offset.reset": "latest"}),
            deserializer=self._deserialize,
        )
        self._dispatcher.subscribe(on_document)

    def _deserialize(self, payload: bytes) -> tuple[str, dict[str, Any]]:
        """Decode one Kafka message with our numeric-only decoder (never pickle); a refused or
        unreadable payload is counted and becomes a name the dispatcher's callback ignores,
        because an exception here would end bluesky-kafka's polling loop."""
        try:
            name, doc = msgpack_deserializer(payload)
            if not isinstance(name, str) or not isinstance(doc, dict):
                raise TypeError("a Kafka message must be a (name, document) pair")
            return name, doc
        except UnsafePayloadError as exc:
            self._assembler.malformed("bad_document", "a payload refused: %s", str(exc)[:120])
        except Exception as exc:
            self._assembler.malformed(
                "undecodable", "%d bytes: %s", len(payload), f"{type(exc).__name__}: {exc}"[:120]
            )
        return _REFUSED, {}

    def attach_journal(self, journal: Any) -> None:
        """Persist open runs; take up those a restart left open (Kafka re-delivers their
        events from the group's committed offset, so nothing sent meanwhile is lost)."""
        for item in self._assembler.resume(journal):
            self._queue.put(item)

    def _poll(self, stop_event: threading.Event) -> None:
        start = self._dispatcher.start
        try:
            if "continue_polling" in inspect.signature(start).parameters:
                start(continue_polling=lambda: not stop_event.is_set())
            else:

                def between_polls() -> None:
                    if stop_event.is_set():
                        raise _StopPollingError

                start(work_during_wait=between_polls)
        except _StopPollingError:
            pass
        except Exception:
            logger.exception("%s: consumer failed", self.name)

    def items(self, stop_event: threading.Event) -> Iterator[StreamItem]:
        """Yield items until ``stop_event`` is set."""
        thread = threading.Thread(target=self._poll, args=(stop_event,), daemon=True)
        thread.start()
        while not stop_event.is_set():
            try:
                yield self._queue.get(timeout=0.1)
            except queue.Empty:
                if not thread.is_alive():
                    return
        thread.join(timeout=10)
