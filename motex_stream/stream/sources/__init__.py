"""Where frames come from: 0MQ, Tiled (live or replay), ``.gr`` files, or Kafka.

All sources yield the same :data:`~motex_stream.stream.frames.StreamItem` sequence, so the
service picks one from configuration (:func:`make_source`) and never cares which it got.
"""

from __future__ import annotations

from motex_stream.stream.config.sources import (
    FilesSourceConfig,
    KafkaSourceConfig,
    SourceConfig,
    TiledReplaySourceConfig,
    TiledSourceConfig,
    ZmqSourceConfig,
)
from motex_stream.stream.sources.base import (
    DocumentAssembler,
    FrameSource,
    SourceConfigError,
    SourceStats,
)
from motex_stream.stream.sources.files_source import FileSeriesSource, natural_key
from motex_stream.stream.sources.kafka_source import KafkaSource
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
