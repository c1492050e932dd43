"""Where frames come from: 0MQ, Tiled (live or replay), ``.gr`` files, or Kafka.

All sources yield the same :data:`~motex_stream.stream.frames.StreamItem` sequence, so the
service picks one from configuration (:func:`make_source`) and never cares which it got.
"""

from __future__ import annotations

import inspect
import logging
import queue
import threading
from collections.abc import Iterator, Mapping
from typing import Any

from motex_stream.stream.config.sources import (
    FilesSourceConfig,
    KafkaSourceConfig,
    SourceConfig,
    TiledReplaySourceConfig,
    TiledSourceConfig,
    ZmqSourceConfig,
)
from motex_stream.stream.frames import StreamItem
from motex_stream.stream.sources.base import DocumentAssembler, FrameSource, SourceStats
from motex_stream.stream.sources.files_source import FileSeriesSource, natural_key
from motex_stream.stream.sources.tiled_source import (
    TiledLiveSource,
    TiledReplaySource,
    attach_tiled_writer,
    load_api_key,
)
from motex_stream.stream.sources.wire import UnsafePayloadError
from motex_stream.stream.sources.zmq_source import (
    ZmqSource,
    make_publisher,
    msgpack_deserializer,
    msgpack_serializer,
)

logger = logging.getLogger(__name__)

__all__ = [
    "DocumentAssembler",
    "FileSeriesSource",
    "FrameSource",
    "KafkaSource",
    "SourceConfigError",
    "SourceStats",
    "TiledLiveSource",
    "TiledReplaySource",
    "ZmqSource",
    "attach_tiled_writer",
    "load_api_key",
    "make_publisher",
    "make_source",
    "msgpack_deserializer",
    "msgpack_serializer",
    "natural_key",
]


class SourceConfigError(ValueError):
    """A configured source cannot be built (e.g. its optional dependency is missing)."""


_REFUSED = "motex:refused"  # the name a refused Kafka payload is handed on under


class _StopPollingError(Exception):
    """Raised between Kafka polls to leave an older bluesky-kafka's blocking loop."""


class KafkaSource:
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


def make_source(cfg: SourceConfig) -> FrameSource:
    """Build the source a validated ``[[sources]]`` entry describes, named as configured.

    The config speaks the beamline's words (``run``, ``speed``, ``glob``); the constructors take
    their own (``run_uid``, ``pace``, ``pattern``): this is the one place they are translated.
    API keys are never part of the entry: sources read them from the environment or the file.
    """
    docs = {"data_key": cfg.data_key, "r_key": cfg.r_key} if hasattr(cfg, "data_key") else {}
    match cfg:
        case ZmqSourceConfig():
            return ZmqSource(
                cfg.address,
                prefix=cfg.prefix.encode(),
                allow_pickle=cfg.allow_pickle,
                name=cfg.name,
                max_message_bytes=cfg.max_message_bytes,
                rcv_hwm=cfg.rcv_hwm,
                backlog_frames=cfg.backlog_frames,
                backlog_bytes=cfg.backlog_bytes,
                **docs,
            )
        case TiledSourceConfig():
            return TiledLiveSource(cfg.uri, key_file=cfg.api_key_file, name=cfg.name, **docs)
        case TiledReplaySourceConfig():
            return TiledReplaySource(
                cfg.uri,
                cfg.run,
                cfg.speed or None,  # speed 0: no waiting
                key_file=cfg.api_key_file,
                name=cfg.name,
                **docs,
            )
        case FilesSourceConfig():
            return FileSeriesSource(cfg.glob, interval=cfg.interval, name=cfg.name)
        case KafkaSourceConfig():
            return KafkaSource(list(cfg.topics), cfg.address, cfg.group_id, name=cfg.name, **docs)
    raise TypeError(f"not a source configuration: {cfg!r}")
