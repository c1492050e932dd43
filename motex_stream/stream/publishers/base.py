"""What every sink looks like: the :class:`Sink` protocol the publishers subclass.

A sink sees run boundaries as well as frames because some outputs are runs themselves (the
derived Bluesky run needs a start and a stop); the others ignore them. All sink methods are
called from the service's single analysis thread, in stream order, so sinks need no locking.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

from motex_stream.stream.frames import RunStart, RunStop
from motex_stream.stream.messages import PublishedFrame

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry


@runtime_checkable
class Sink(Protocol):
    """An output for analysed frames (see :mod:`motex_stream.stream.messages`).

    Sinks subclass this protocol. ``publish`` and ``close`` are each sink's own; the other
    members are real members with defaults that do nothing, for what only some sinks do
    (open a run, count their own losses, tell what they already hold after a restart), so
    the service calls them on every sink instead of probing for them.
    """

    #: the label of its errors in logs and metrics (``sink=...``): the configured name, so
    #: two sinks of one type stay apart; a sink built by hand defaults to its class name
    name: str

    def on_run_start(self, start: RunStart) -> None:
        """A run began. Default: nothing (only sinks that write runs open one)."""

    def publish(self, published: PublishedFrame) -> None: ...

    def on_run_stop(self, stop: RunStop) -> None:
        """A run ended. Default: nothing."""

    def close(self) -> None: ...

    def bind_metrics(self, registry: CollectorRegistry) -> None:
        """Declare the sink's own series (the Tiled archive's lost and waiting events) in
        the service's registry. Default: it has none."""

    def last_published(self, run_uid: str, model: str) -> int | None:
        """The last seq of run ``run_uid`` under ``model`` that this sink wrote itself (a
        file may hold one more than the run journal after a kill). Default: cannot tell."""
        return None

    def stored_last_seq(self, run_uid: str, model: str) -> int | None:
        """The last seq of that run the store behind this sink holds, read back (the source
        of truth: it may hold fewer than the journal says). Default: cannot tell."""
        return None
