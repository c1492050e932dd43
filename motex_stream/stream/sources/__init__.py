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

from motex_stream.stream.frames import StreamItem
from motex_stream.stream.sources.base import DocumentAssembler, FrameSource, SourceStats
from motex_stream.stream.sources.files_source import FileSeriesSource, natural_key
from motex_stream.stream.sources.tiled_source import (
    TiledLiveSource,
    TiledReplaySource,
    attach_tiled_writer,
    load_api_key,
)
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

_DOC_KEYS = ("data_key", "r_key", "stream_name")


class SourceConfigError(ValueError):
    """The source section of the configuration is incomplete or names an unknown type."""


def _require(spec: Mapping[str, Any], key: str) -> Any:
    if key not in spec or spec[key] in (None, ""):
        raise SourceConfigError(f"source type {spec.get('type')!r} needs {key!r}")
    return spec[key]


def _document_options(spec: Mapping[str, Any]) -> dict[str, Any]:
    return {k: spec[k] for k in _DOC_KEYS if k in spec}


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
        **document_options: Any,
    ) -> None:
        try:
            import bluesky_kafka
        except ImportError as err:
            raise SourceConfigError(
                "the kafka source needs bluesky-kafka: pip install 'motex-stream[kafka]'"
            ) from err
        self.name = f"kafka:{','.join(topics)}"
        self.stats = SourceStats()
        self._queue: queue.SimpleQueue[StreamItem] = queue.SimpleQueue()
        assembler = DocumentAssembler(stats=self.stats, source_name=self.name, **document_options)

        def on_document(name: str, doc: dict[str, Any]) -> None:
            for item in assembler.process(name, doc):
                self._queue.put(item)

        self._dispatcher = bluesky_kafka.RemoteDispatcher(
            topics=list(topics),
            bootstrap_servers=bootstrap_servers,
            group_id=group_id,
            consumer_config=dict(consumer_config or {"auto.offset.reset": "latest"}),
            deserializer=_kafka_deserializer,
        )
        self._dispatcher.subscribe(on_document)

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


def _kafka_deserializer(payload: bytes) -> tuple[str, dict[str, Any]]:
    name, doc = msgpack_deserializer(payload)  # type: ignore[misc]
    return str(name), dict(doc)


def _make_kafka(spec: Mapping[str, Any]) -> FrameSource:
    options = {k: v for k, v in spec.items() if k != "type"}
    for key in ("topics", "bootstrap_servers"):
        _require(spec, key)
    return KafkaSource(**options)


def make_source(spec: Mapping[str, Any]) -> FrameSource:
    """Build a source from a config mapping such as ``{"type": "zmq", "address": ...}``.

    Types and their keys: ``zmq`` (address, prefix, allow_pickle); ``tiled`` (uri, key_file);
    ``tiled-replay`` (uri, run_uid, pace, key_file); ``files`` (path, interval); ``kafka``
    (needs the ``kafka`` extra). Document-based types also take data_key, r_key, stream_name.
    API keys are never taken from the spec: they come from the environment or a key file.
    """
    kind = str(spec.get("type", "")).lower()
    if "api_key" in spec:
        raise SourceConfigError(
            "do not put API keys in the configuration; set MOTEX_TILED_API_KEY or key_file"
        )
    if kind == "zmq":
        prefix = spec.get("prefix", "raw")
        return ZmqSource(
            str(_require(spec, "address")),
            prefix=prefix.encode() if isinstance(prefix, str) else bytes(prefix),
            allow_pickle=bool(spec.get("allow_pickle", False)),
            **_document_options(spec),
        )
    if kind == "tiled":
        return TiledLiveSource(
            str(_require(spec, "uri")), key_file=spec.get("key_file"), **_document_options(spec)
        )
    if kind == "tiled-replay":
        pace = spec.get("pace")
        return TiledReplaySource(
            str(_require(spec, "uri")),
            str(_require(spec, "run_uid")),
            None if pace is None else float(pace),
            key_file=spec.get("key_file"),
            **_document_options(spec),
        )
    if kind == "files":
        interval = spec.get("interval")
        return FileSeriesSource(
            _require(spec, "path"), interval=None if interval is None else float(interval)
        )
    if kind == "kafka":
        return _make_kafka(spec)
    raise SourceConfigError(
        f"unknown source type {spec.get('type')!r}; expected zmq, tiled, tiled-replay, files "
        "or kafka"
    )
