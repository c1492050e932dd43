"""Where analysed frames go: the :class:`Sink` protocol and :func:`make_sinks` from config.

A sink sees run boundaries as well as messages because some outputs are runs themselves (the
derived Bluesky run needs a start and a stop); the others ignore them. All sink methods are
called from the service's single analysis thread, in stream order, so sinks need no locking.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from motex_stream.stream.config import Config, ConfigError, SinkConfig
from motex_stream.stream.frames import Frame, RunStart, RunStop


@runtime_checkable
class Sink(Protocol):
    """An output for v1 messages (see :mod:`motex_stream.stream.messages`)."""

    def on_run_start(self, start: RunStart) -> None: ...

    def publish(self, message: dict[str, Any], frame: Frame) -> None: ...

    def on_run_stop(self, stop: RunStop) -> None: ...

    def close(self) -> None: ...


def make_sink(sink: SinkConfig) -> Sink:
    """One sink from its config entry (imports lazily: Tiled is heavy and often unused)."""
    if sink.type == "zmq":
        from motex_stream.stream.publishers.zmq_pub import ZmqPublisher

        return ZmqPublisher(sink.bind)
    if sink.type == "jsonl":
        from motex_stream.stream.publishers.jsonl import JsonlSink

        assert sink.path is not None  # checked by the config parser
        return JsonlSink(sink.path)
    if sink.type == "bluesky":
        from motex_stream.stream.publishers.bluesky_run import BlueskyRunSink

        return BlueskyRunSink.from_config(sink)
    raise ConfigError(f"unknown sink type {sink.type!r}")


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
