"""Where analysed frames go: the :class:`Sink` protocol and :func:`make_sinks` from config.

A sink sees run boundaries as well as frames because some outputs are runs themselves (the
derived Bluesky run needs a start and a stop); the others ignore them. Sinks receive the typed
:class:`~motex_stream.stream.messages.PublishedFrame` and serialise it themselves: JSON for
ZMQ and JSON Lines (one :func:`~motex_stream.stream.messages.to_json`), numbers for the
Bluesky run. All sink methods are called from the service's single analysis thread, in stream
order, so sinks need no locking.
"""

from __future__ import annotations

from motex_stream.stream.config import (
    BlueskySinkConfig,
    Config,
    JsonlSinkConfig,
    SinkConfig,
    ZmqSinkConfig,
)
from motex_stream.stream.publishers.base import Sink


def make_sink(sink: SinkConfig) -> Sink:
    """One sink from its config entry (imports lazily: Tiled is heavy and often unused)."""
    match sink:
        case ZmqSinkConfig():
            from motex_stream.stream.publishers.zmq_pub import ZmqPublisher

            return ZmqPublisher(sink.bind, name=sink.name)
        case JsonlSinkConfig():
            from motex_stream.stream.publishers.jsonl import JsonlSink

            return JsonlSink(sink.path, fsync=sink.fsync, name=sink.name)
        case BlueskySinkConfig():
            from motex_stream.stream.publishers.bluesky_run import BlueskyRunSink

            return BlueskyRunSink.from_config(sink)
    raise TypeError(f"not a sink configuration: {sink!r}")


def make_sinks(config: Config) -> list[Sink]:
    """All configured sinks; if one fails to open, the ones already open are closed."""
    sinks: list[Sink] = []
    try:
        for entry in config.sinks:
            sinks.append(make_sink(entry))
    except BaseException:
        for s in sinks:
            s.close()
        raise
    return sinks


__all__ = ["Sink", "make_sink", "make_sinks"]
