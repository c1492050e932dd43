"""What every source looks like, and the one place where Bluesky documents become frames.

0MQ, Tiled (live and replay) and Kafka all deliver Bluesky documents; if each of them turned
documents into frames on its own, gap counting, orphan handling and validation would drift
apart. :class:`DocumentAssembler` does it once. It never raises on bad input: a live
experiment must not stop because one event was lost or one frame was broken, so every problem
is logged and counted in :class:`SourceStats` instead.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Protocol, runtime_checkable

import event_model
import numpy as np

from motex_stream.stream.frames import (
    Frame,
    FrameError,
    RunStart,
    RunStop,
    StreamItem,
    validate_frame,
)

logger = logging.getLogger(__name__)

DEFAULT_DATA_KEY = "pdf_gr"
DEFAULT_R_KEY = "pdf_r"
DEFAULT_STREAM = "primary"


@runtime_checkable
class FrameSource(Protocol):
    """Anything the service can read frames from.

    ``items`` blocks while waiting for data and returns once ``stop_event`` is set (live
    sources) or the data are exhausted (archives); it owns and releases its connections.
    """

    name: str

    def items(self, stop_event: threading.Event) -> Iterator[StreamItem]: ...


@dataclass
class SourceStats:
    """Counters a source keeps so silent losses (0MQ drops, broken frames) become visible."""

    received: int = 0  # events (frames) seen, good or bad
    gaps: int = 0  # events missing according to seq_num
    orphans: int = 0  # events whose start/descriptor was never seen
    malformed: int = 0  # frames or documents that could not be turned into a valid Frame
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, counter: str, n: int = 1) -> None:
        """Increment ``counter`` by ``n``; safe from receiver threads."""
        with self._lock:
            setattr(self, counter, getattr(self, counter) + n)

    def as_dict(self) -> dict[str, int]:
        """A snapshot for metrics and logs."""
        with self._lock:
            return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "_lock"}


@dataclass
class _Descriptor:
    """What the assembler remembers about one event stream of one run."""

    run_uid: str
    wanted: bool  # right stream name and carries the G data key
    r: np.ndarray | None  # grid from the configuration, if it is there
    last_seq: int = 0


def _find_config_grid(descriptor: Mapping[str, Any], r_key: str) -> np.ndarray | None:
    """The r grid from ``descriptor['configuration'][device]['data'][r_key]``, any device."""
    configuration = descriptor.get("configuration") or {}
    for device_config in configuration.values():
        data = (device_config or {}).get("data") or {}
        if r_key in data:
            return np.asarray(data[r_key], dtype=float)
    return None


class DocumentAssembler:
    """Turn a sequence of Bluesky ``(name, doc)`` pairs into RunStart/Frame/RunStop items.

    G is read from ``event['data'][data_key]``; r from the descriptor's configuration under
    ``r_key`` or, failing that, from the same event's data. Only descriptors named
    ``stream_name`` (``None``: any) that carry ``data_key`` produce frames; other streams
    (baseline, monitors) are ignored silently. Not thread-safe: feed it from one thread, or
    under a lock.
    """

    def __init__(
        self,
        *,
        data_key: str = DEFAULT_DATA_KEY,
        r_key: str = DEFAULT_R_KEY,
        stream_name: str | None = DEFAULT_STREAM,
        stats: SourceStats | None = None,
        source_name: str = "documents",
    ) -> None:
        self.data_key = data_key
        self.r_key = r_key
        self.stream_name = stream_name
        self.stats = stats if stats is not None else SourceStats()
        self.source_name = source_name
        self._starts: dict[str, Mapping[str, Any]] = {}
        self._descriptors: dict[str, _Descriptor] = {}

    def process(self, name: str, doc: Mapping[str, Any]) -> list[StreamItem]:
        """Consume one document; return the items it completes (possibly none). Never raises."""
        try:
            handler = getattr(self, f"_on_{name}", None)
            if handler is None:
                return []  # datum, resource, stream_* : no frames in them
            return handler(doc)
        except Exception:
            self.stats.add("malformed")
            logger.exception(
                "%s: could not interpret a %r document; skipped", self.source_name, name
            )
            return []

    def _on_start(self, doc: Mapping[str, Any]) -> list[StreamItem]:
        uid = str(doc["uid"])
        self._starts[uid] = dict(doc)
        return [RunStart(uid=uid, time=float(doc.get("time", 0.0)), metadata=dict(doc))]

    def _on_descriptor(self, doc: Mapping[str, Any]) -> list[StreamItem]:
        run_uid = str(doc.get("run_start", ""))
        if run_uid not in self._starts:
            # Not counted: ``orphans`` counts events, which is what the analysis loses.
            logger.warning(
                "%s: descriptor %s belongs to run %s whose start was never seen",
                self.source_name,
                doc.get("uid"),
                run_uid,
            )
        name_ok = self.stream_name is None or doc.get("name", DEFAULT_STREAM) == self.stream_name
        wanted = name_ok and self.data_key in (doc.get("data_keys") or {})
        self._descriptors[str(doc["uid"])] = _Descriptor(
            run_uid=run_uid, wanted=wanted, r=_find_config_grid(doc, self.r_key)
        )
        return []

    def _on_event_page(self, doc: Mapping[str, Any]) -> list[StreamItem]:
        items: list[StreamItem] = []
        for event in event_model.unpack_event_page(dict(doc)):
            items.extend(self._on_event(event))
        return items

    def _on_event(self, doc: Mapping[str, Any]) -> list[StreamItem]:
        descriptor = self._descriptors.get(str(doc.get("descriptor")))
        if descriptor is None or descriptor.run_uid not in self._starts:
            self.stats.add("orphans")
            logger.warning(
                "%s: event %s (seq %s) has no known start/descriptor; skipped",
                self.source_name,
                doc.get("uid"),
                doc.get("seq_num"),
            )
            return []
        if not descriptor.wanted:
            return []
        self.stats.add("received")
        seq = int(doc["seq_num"])
        self._count_gap(descriptor, seq)
        return self._make_frame(descriptor, doc, seq)

    def _count_gap(self, descriptor: _Descriptor, seq: int) -> None:
        missing = seq - descriptor.last_seq - 1
        if missing > 0:
            self.stats.add("gaps", missing)
            logger.warning(
                "%s: run %s lost %d event(s) before seq_num %d",
                self.source_name,
                descriptor.run_uid,
                missing,
                seq,
            )
        elif missing < 0:
            logger.warning(
                "%s: run %s: seq_num %d arrived after %d (duplicate or reordered)",
                self.source_name,
                descriptor.run_uid,
                seq,
                descriptor.last_seq,
            )
        descriptor.last_seq = max(descriptor.last_seq, seq)

    def _make_frame(
        self, descriptor: _Descriptor, doc: Mapping[str, Any], seq: int
    ) -> list[StreamItem]:
        data = doc.get("data") or {}
        r = descriptor.r if descriptor.r is not None else data.get(self.r_key)
        try:
            if r is None:
                raise FrameError(f"frame {seq} of {descriptor.run_uid}: no r grid ({self.r_key!r})")
            if self.data_key not in data:
                raise FrameError(f"frame {seq} of {descriptor.run_uid}: no {self.data_key!r}")
            frame = validate_frame(
                Frame(
                    source=descriptor.run_uid,
                    seq=seq,
                    time=float(doc.get("time", 0.0)),
                    r=np.asarray(r, dtype=float),
                    g=np.asarray(data[self.data_key], dtype=float),
                    run_metadata=self._starts[descriptor.run_uid],
                )
            )
        except (FrameError, TypeError, ValueError) as err:
            self.stats.add("malformed")
            logger.warning("%s: malformed frame skipped: %s", self.source_name, err)
            return []
        return [frame]

    def _on_stop(self, doc: Mapping[str, Any]) -> list[StreamItem]:
        run_uid = str(doc.get("run_start", ""))
        if self._starts.pop(run_uid, None) is None:
            logger.warning(
                "%s: stop for run %s whose start was never seen", self.source_name, run_uid
            )
            return []
        # Forget the run's descriptors: a long-running service must not grow without bound.
        for key in [k for k, d in self._descriptors.items() if d.run_uid == run_uid]:
            del self._descriptors[key]
        num_events = doc.get("num_events") or {}
        if self.stream_name is not None:
            count = num_events.get(self.stream_name)
        else:
            count = sum(num_events.values()) if num_events else None
        return [
            RunStop(
                uid=run_uid,
                time=float(doc.get("time", 0.0)),
                exit_status=str(doc.get("exit_status", "success")),
                num_events=None if count is None else int(count),
            )
        ]
