"""What every source looks like, and the one place where Bluesky documents become frames.

0MQ, Tiled (live and replay) and Kafka all deliver Bluesky documents; if each of them turned
documents into frames on its own, gap counting, orphan handling and validation would drift
apart. :class:`DocumentAssembler` does it once. It never raises on bad input: a live
experiment must not stop because one event was lost or one frame was broken, so every problem
is logged and counted in :class:`SourceStats` instead.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Protocol, runtime_checkable

import event_model
import numpy as np

from motex_stream.stream.config.sources import DEFAULT_DATA_KEY, DEFAULT_R_KEY
from motex_stream.stream.frames import FrameError, RunStart, RunStop, StreamItem, ValidFrame
from motex_stream.stream.journal import RunJournal
from motex_stream.stream.ratelimit import RateLimitedLog

logger = logging.getLogger(__name__)

DEFAULT_STREAM = "primary"
_KNOWN_NAMES = frozenset(n.name for n in event_model.DocumentNames)
_MAX_SEQ_JUMP = 1_000_000  # a seq_num further ahead than this is garbage, not a gap


class SourceConfigError(ValueError):
    """A configured source cannot be built (e.g. its optional dependency is missing)."""


# Bounds on what the network can make the assembler remember (issue 19): a run has a handful of
# streams (primary, baseline, monitors); a service follows a few runs at a time.
DEFAULT_MAX_DESCRIPTORS_PER_RUN = 8
DEFAULT_MAX_DESCRIPTORS = 256
DEFAULT_MAX_DESCRIPTOR_BYTES = 128 * 2**20  # r grids kept from descriptors, all runs together
DEFAULT_MAX_OPEN_RUNS = 1000  # runs whose stop never came (0MQ lost it) do not pile up
_FINISHED_KEPT = 10_000  # uids of stopped runs remembered, to refuse a re-sent run


@runtime_checkable
class FrameSource(Protocol):
    """Anything the service can read frames from.

    ``items`` blocks while waiting for data and returns once ``stop_event`` is set (live
    sources) or the data are exhausted (archives); it owns and releases its connections.
    ``stats`` are its counters (gaps, malformed input, backlog overflow), which the service
    turns into metrics.

    Sources subclass this protocol: the capabilities only some sources have are real members
    here, with defaults that do nothing, so the service reads and calls them on every source
    instead of probing for them.
    """

    name: str
    stats: SourceStats
    #: False for a finite input read as fast as the service takes it (an unpaced replay),
    #: which has no arrival rate the analysis must keep up with
    paced: bool = True

    def items(self, stop_event: threading.Event) -> Iterator[StreamItem]: ...

    def attach_journal(self, journal: RunJournal) -> None:
        """Take up the runs ``journal`` holds open after a restart (live sources that can
        meet a run again midway: 0MQ, Tiled live, Kafka). Default: nothing to take up."""

    def drain_backlog(self) -> list[StreamItem]:
        """At shutdown, what the source received but never handed to the service (a 0MQ or
        Tiled live backlog), so each of its frames is counted. Default: it holds nothing."""
        return []


@dataclass
class SourceStats:
    """Counters a source keeps so silent losses (0MQ drops, broken input) become visible.

    ``malformed`` counts every input that was dropped because it could not be understood or
    was refused; ``malformed_kinds`` splits it by kind (``unknown_name``, ``undecodable``,
    ``oversized``, ``bad_document``, ``bad_frame``, ...), so an operator can tell a
    misconfigured publisher from a port scan. Bounds count there too:
    ``too_many_descriptors`` (a run's descriptors past ``max_descriptors_per_run``),
    ``orphan_descriptor`` (a descriptor of a run never started: not kept),
    ``evicted_descriptor`` / ``evicted_run`` (the oldest forgotten to keep the totals bounded),
    ``rerun`` (a start, descriptor or stop of a run already stopped: its events count as
    ``duplicates``). One kind does not drop its document: ``bad_num_events`` (a stop whose
    ``num_events`` is not a map of counts is used, without the counts).
    """

    received: int = 0  # events (frames) seen, good or bad, duplicates excluded
    gaps: int = 0  # events missing according to seq_num (counted once, when given up)
    orphans: int = 0  # events whose start/descriptor was never seen
    malformed: int = 0  # messages or documents that could not be turned into a valid Frame
    duplicates: int = 0  # events whose seq_num was already seen in their run: dropped
    late: int = 0  # events that arrived after a higher seq_num of their run: analysed
    overflow: int = 0  # frames dropped because the source's bounded backlog was full
    malformed_kinds: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, counter: str, n: int = 1, kind: str | None = None) -> None:
        """Increment ``counter`` by ``n`` (``malformed``: under ``kind``); thread-safe."""
        with self._lock:
            setattr(self, counter, getattr(self, counter) + n)
            if counter == "malformed":
                key = kind or "unspecified"
                self.malformed_kinds[key] = self.malformed_kinds.get(key, 0) + n

    def as_dict(self) -> dict[str, int]:
        """A snapshot of the plain counters, for metrics and logs."""
        with self._lock:
            return {
                f.name: getattr(self, f.name)
                for f in fields(self)
                if f.name not in ("_lock", "malformed_kinds")
            }

    def kinds(self) -> dict[str, int]:
        """A snapshot of ``malformed`` by kind."""
        with self._lock:
            return dict(self.malformed_kinds)


class SeqTracker:
    """``seq_num`` bookkeeping of one event stream: duplicates, late arrivals and true gaps.

    0MQ loses events silently and some transports reorder them, so the tracker tells three
    cases apart. A seq_num seen before is a *duplicate* (dropped: analysing it again would
    publish a second derived event with the same uid). One lower than the highest seen but not
    seen before is *late* (analysed, counted). A seq_num still missing once the stream has
    moved ``window`` past it is a *gap*, counted once; so are the ones still missing at the
    run's stop. Arrival 6, 5, 4 after 1, 2, 3 therefore counts 2 late and 0 gaps.

    Memory is bounded: everything up to ``watermark`` is settled (seen or given up) and only the
    seq_nums above it are kept, plus a bounded set of the given-up ones (to recognise a very late
    arrival as late rather than as a duplicate).
    """

    _GIVEN_UP_KEPT = 10_000

    def __init__(self, window: int = 16, watermark: int = 0) -> None:
        self.window = max(1, int(window))
        self.watermark = watermark  # every seq <= watermark is settled
        self.highest = watermark
        self._seen: set[int] = set()  # seen seqs above the watermark
        self._given_up: set[int] = set()

    def classify(self, seq: int) -> tuple[str, int]:
        """``('new'|'late'|'duplicate', gaps newly given up)`` for an arriving ``seq``."""
        if seq <= self.watermark:
            if seq in self._given_up:
                self._given_up.discard(seq)
                return "late", 0
            return "duplicate", 0
        if seq in self._seen:
            return "duplicate", 0
        kind = "late" if seq < self.highest else "new"
        self._seen.add(seq)
        self.highest = max(self.highest, seq)
        return kind, self._advance(self.highest - self.window)

    def finish(self, last: int | None = None) -> int:
        """Give up every seq still missing at the run's end (up to ``last`` if known)."""
        end = max(self.highest, last or 0)
        return self._advance(end)

    def _advance(self, upto: int) -> int:
        gaps = 0
        if upto > self.watermark:
            settled = {s for s in self._seen if s <= upto}
            gaps = upto - self.watermark - len(settled)
            if 0 < gaps <= self._GIVEN_UP_KEPT - len(self._given_up):
                self._given_up.update(set(range(self.watermark + 1, upto + 1)) - settled)
            self._seen -= settled
            self.watermark = upto
        while self.watermark + 1 in self._seen:
            self._seen.discard(self.watermark + 1)
            self.watermark += 1
        return gaps


@dataclass
class _Descriptor:
    """What the assembler remembers about one event stream of one run."""

    run_uid: str
    wanted: bool  # right stream name and carries the G data key
    r: np.ndarray | None  # grid from the configuration, if it is there
    seqs: SeqTracker = field(default_factory=SeqTracker)
    resumed_after: int = 0  # a run taken up after a restart: seq_nums published before it


def _find_config_grid(descriptor: Mapping[str, Any], r_key: str) -> np.ndarray | None:
    """The r grid from ``descriptor['configuration'][device]['data'][r_key]``, any device."""
    configuration = descriptor.get("configuration") or {}
    if not isinstance(configuration, Mapping):
        raise TypeError("configuration is not a mapping")
    for device_config in configuration.values():
        data = (device_config or {}).get("data") or {}
        if r_key in data:
            return np.asarray(data[r_key], dtype=float)
    return None


def _number(value: Any, default: float = 0.0) -> float:
    """A finite float from a document field; ``default`` for anything else (a stop must close
    its run even when a field the analysis does not need is garbage)."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        return default
    try:
        number = float(value)
    except OverflowError:
        return default
    return number if math.isfinite(number) else default


def _event_counts(num_events: Any) -> tuple[dict[str, int], bool]:
    """``num_events`` of a stop as ``{stream: count}``; False if any part of it was not."""
    if num_events is None:
        return {}, True
    if not isinstance(num_events, Mapping):
        return {}, False
    counts: dict[str, int] = {}
    ok = True
    for stream, count in num_events.items():
        if (
            isinstance(stream, str)
            and not isinstance(count, bool)
            and isinstance(count, int | np.integer)
            and 0 <= count <= 2**53
        ):
            counts[stream] = int(count)
        else:
            ok = False
    return counts, ok


def _bounded_add(cache: OrderedDict[str, None], key: str, limit: int) -> None:
    cache[key] = None
    cache.move_to_end(key)
    while len(cache) > limit:
        cache.popitem(last=False)


class DocumentAssembler:
    """Turn a sequence of Bluesky ``(name, doc)`` pairs into RunStart/Frame/RunStop items.

    G is read from ``event['data'][data_key]``; r from the descriptor's configuration under
    ``r_key`` or, failing that, from the same event's data. Only descriptors named
    ``stream_name`` (``None``: any) that carry ``data_key`` produce frames; other streams
    (baseline, monitors) are ignored silently. ``seq_num`` is tracked per stream
    (:class:`SeqTracker`, ``reorder_window``): duplicates are dropped, late events analysed and
    counted, true gaps counted once. With a ``journal``, starts and descriptors are persisted
    so :meth:`resume` can pick open runs up after a restart (the journal writes on its own
    thread; only what resuming needs of a descriptor is given to it). Not thread-safe: feed it
    from one thread, or under a lock.

    Everything it remembers is bounded, because the documents come from the network: open runs
    (``max_open_runs``, the oldest evicted), descriptors per run (``max_descriptors_per_run``,
    later ones dropped) and in total (``max_descriptors`` and ``max_descriptor_bytes`` of r
    grids, the oldest evicted); descriptors of runs never started are not kept. A run already
    stopped is refused if re-sent (its events are duplicates), so it is not analysed and
    published twice. Each of these is counted (see :class:`SourceStats`).
    """

    def __init__(
        self,
        *,
        data_key: str = DEFAULT_DATA_KEY,
        r_key: str = DEFAULT_R_KEY,
        stream_name: str | None = DEFAULT_STREAM,
        stats: SourceStats | None = None,
        source_name: str = "documents",
        reorder_window: int = 16,
        journal: RunJournal | None = None,
        max_descriptors_per_run: int = DEFAULT_MAX_DESCRIPTORS_PER_RUN,
        max_descriptors: int = DEFAULT_MAX_DESCRIPTORS,
        max_descriptor_bytes: int = DEFAULT_MAX_DESCRIPTOR_BYTES,
        max_open_runs: int = DEFAULT_MAX_OPEN_RUNS,
    ) -> None:
        self.data_key = data_key
        self.r_key = r_key
        self.stream_name = stream_name
        self.stats = stats if stats is not None else SourceStats()
        self.source_name = source_name
        self.reorder_window = reorder_window
        self.journal = journal
        self.max_descriptors_per_run = max_descriptors_per_run
        self.max_descriptors = max_descriptors
        self.max_descriptor_bytes = max_descriptor_bytes
        self.max_open_runs = max_open_runs
        self._starts: OrderedDict[str, Mapping[str, Any]] = OrderedDict()
        self._descriptors: OrderedDict[str, _Descriptor] = OrderedDict()  # oldest first
        self._descriptor_bytes = 0
        self._finished: OrderedDict[str, None] = OrderedDict()  # stopped runs
        self._finished_descriptors: OrderedDict[str, None] = OrderedDict()  # and their streams
        self._log = RateLimitedLog(logger)

    def malformed(self, kind: str, msg: str, *args: object) -> None:
        """Count one dropped input under ``kind`` and log it at a bounded rate."""
        self.stats.add("malformed", kind=kind)
        self._log.warning(
            kind, "%s: dropped malformed input (%s): " + msg, self.source_name, kind, *args
        )

    def resume(self, journal: RunJournal) -> list[StreamItem]:
        """Take up the runs ``journal`` holds open for this source; their RunStart items.

        Events of a resumed run whose seq_num is at or below the last one published count as
        duplicates; the ones in between (received but not published before the restart) are
        gaps unless they arrive again.
        """
        self.journal = journal
        items: list[StreamItem] = []
        for run in journal.open_runs(self.source_name):
            try:
                self._starts[run.uid] = run.start
                for doc in run.descriptors:
                    self._add_descriptor(doc, watermark=run.last_seq)
                metadata = dict(run.start)
                if run.model is not None:
                    metadata["motex_model"] = run.model
                items.append(
                    RunStart(
                        uid=run.uid,
                        time=_number(run.start.get("time")),
                        metadata=metadata,
                        resumed_after=run.last_seq,
                    )
                )
            except Exception as exc:  # a journal written by another version: forget the run
                logger.error("%s: cannot resume run %s (%s)", self.source_name, run.uid, exc)
                journal.close_run(run.uid)
                continue
            logger.info(
                "%s: resumed run %s after seq_num %d (model %s)",
                self.source_name,
                run.uid,
                run.last_seq,
                run.model,
            )
        return items

    def process(self, name: str, doc: Any) -> list[StreamItem]:
        """Consume one document; return the items it completes (possibly none). Never raises."""
        if not isinstance(doc, Mapping):
            self.malformed("not_a_mapping", "a %r document of type %s", name, type(doc).__name__)
            return []
        try:
            handler = getattr(self, f"_on_{name}", None)
            if handler is None:
                if name not in _KNOWN_NAMES:
                    self.malformed("unknown_name", "document name %r", str(name)[:40])
                return []  # datum, resource, stream_* : no frames in them
            return handler(doc)
        except Exception as exc:
            self.malformed("bad_document", "a %r document: %s: %s", name, type(exc).__name__, exc)
            return []

    def _on_start(self, doc: Mapping[str, Any]) -> list[StreamItem]:
        uid = doc["uid"]
        if not isinstance(uid, str) or not uid:
            raise TypeError(f"uid must be a non-empty string, got {type(uid).__name__}")
        time_ = float(doc.get("time", 0.0))
        if uid in self._finished:
            self.malformed("rerun", "start of run %s, which has already stopped", uid[:80])
            return []
        if uid in self._starts:  # a start sent twice: the run goes on, the copy is dropped
            self.malformed("rerun", "second start of open run %s", uid[:80])
            return []
        self._starts[uid] = dict(doc)
        while len(self._starts) > self.max_open_runs:
            old, _ = self._starts.popitem(last=False)
            self._forget_descriptors(old)
            self.malformed(
                "evicted_run", "run %s forgotten: more than %d open", old[:80], self.max_open_runs
            )
        if self.journal is not None:
            self.journal.record_start(self.source_name, doc)
        return [RunStart(uid=uid, time=time_, metadata=dict(doc))]

    def _on_descriptor(self, doc: Mapping[str, Any]) -> list[StreamItem]:
        run_uid = str(doc.get("run_start", ""))
        uid = doc["uid"]
        if not isinstance(uid, str) or not uid:
            raise TypeError(f"descriptor uid must be a non-empty string, got {type(uid).__name__}")
        if run_uid in self._finished:
            _bounded_add(self._finished_descriptors, uid, _FINISHED_KEPT)
            self.malformed(
                "rerun", "descriptor %s of run %s, which has stopped", uid[:80], run_uid[:80]
            )
            return []
        if run_uid not in self._starts:
            # Not kept: its events could not be analysed anyway (they count as orphans), and
            # descriptors of runs never started would otherwise stay in memory for ever.
            self.malformed(
                "orphan_descriptor",
                "descriptor %s of run %s, never started",
                uid[:80],
                run_uid[:80],
            )
            return []
        if uid in self._descriptors:
            self.malformed("rerun", "descriptor %s sent twice", uid[:80])
            return []
        per_run = sum(1 for d in self._descriptors.values() if d.run_uid == run_uid)
        if per_run >= self.max_descriptors_per_run:
            self.malformed(
                "too_many_descriptors",
                "run %s has %d descriptors already (max_descriptors_per_run)",
                run_uid[:80],
                per_run,
            )
            return []
        descriptor = self._add_descriptor(doc)
        if self.journal is not None:
            self.journal.record_descriptor(run_uid, self._compact(doc, descriptor))
        return []

    def _compact(self, doc: Mapping[str, Any], descriptor: _Descriptor) -> dict[str, Any]:
        """What :meth:`resume` needs of a descriptor, and nothing else (no other devices'
        configuration, no other data keys): the journal stays small whatever is sent."""
        compact: dict[str, Any] = {
            "uid": str(doc["uid"]),
            "run_start": descriptor.run_uid,
            "name": str(doc.get("name", DEFAULT_STREAM)),
            "data_keys": {self.data_key: {}} if descriptor.wanted else {},
        }
        if descriptor.wanted and descriptor.r is not None:
            compact["configuration"] = {"motex": {"data": {self.r_key: descriptor.r}}}
        return compact

    def _add_descriptor(self, doc: Mapping[str, Any], watermark: int = 0) -> _Descriptor:
        run_uid = str(doc.get("run_start", ""))
        name_ok = self.stream_name is None or doc.get("name", DEFAULT_STREAM) == self.stream_name
        data_keys = doc.get("data_keys") or {}
        if not isinstance(data_keys, Mapping):
            raise TypeError("data_keys is not a mapping")
        wanted = name_ok and self.data_key in data_keys
        # the grid is kept only for the stream that is analysed
        r = _find_config_grid(doc, self.r_key) if wanted else None
        descriptor = _Descriptor(
            run_uid=run_uid,
            wanted=wanted,
            r=r,
            seqs=SeqTracker(self.reorder_window, watermark),
            resumed_after=watermark,
        )
        self._descriptors[str(doc["uid"])] = descriptor
        self._descriptor_bytes += 0 if r is None else r.nbytes
        while len(self._descriptors) > 1 and (
            len(self._descriptors) > self.max_descriptors
            or self._descriptor_bytes > self.max_descriptor_bytes
        ):
            old_uid, old = self._descriptors.popitem(last=False)
            self._descriptor_bytes -= 0 if old.r is None else old.r.nbytes
            self.malformed(
                "evicted_descriptor",
                "descriptor %s of run %s forgotten (max_descriptors / max_descriptor_bytes)",
                old_uid[:80],
                old.run_uid[:80],
            )
        return descriptor

    def _forget_descriptors(self, run_uid: str) -> list[_Descriptor]:
        """Drop (and return) the descriptors of ``run_uid``; remember their uids as finished."""
        gone = []
        for key in [k for k, d in self._descriptors.items() if d.run_uid == run_uid]:
            descriptor = self._descriptors.pop(key)
            self._descriptor_bytes -= 0 if descriptor.r is None else descriptor.r.nbytes
            _bounded_add(self._finished_descriptors, key, _FINISHED_KEPT)
            gone.append(descriptor)
        return gone

    def _on_event_page(self, doc: Mapping[str, Any]) -> list[StreamItem]:
        items: list[StreamItem] = []
        for event in event_model.unpack_event_page(dict(doc)):
            items.extend(self._on_event(event))
        return items

    def _on_event(self, doc: Mapping[str, Any]) -> list[StreamItem]:
        descriptor = self._descriptors.get(str(doc.get("descriptor")))
        if descriptor is None and str(doc.get("descriptor")) in self._finished_descriptors:
            self.stats.add("duplicates")  # an event of a run already stopped: re-sent
            self._log.warning(
                "rerun_event",
                "%s: event %s belongs to a run that has stopped; dropped",
                self.source_name,
                str(doc.get("uid"))[:80],
            )
            return []
        if descriptor is None or descriptor.run_uid not in self._starts:
            self.stats.add("orphans")
            self._log.warning(
                "orphan_event",
                "%s: event %s (seq %s) has no known start/descriptor; skipped",
                self.source_name,
                doc.get("uid"),
                doc.get("seq_num"),
            )
            return []
        if not descriptor.wanted:
            return []
        seq = doc.get("seq_num")
        if isinstance(seq, bool) or not isinstance(seq, int | np.integer) or not seq > 0:
            self.malformed("bad_seq_num", "event %s: seq_num %r", doc.get("uid"), seq)
            return []
        seq = int(seq)
        if seq > descriptor.seqs.highest + _MAX_SEQ_JUMP:
            self.malformed("bad_seq_num", "event %s: seq_num %d jumps too far", doc.get("uid"), seq)
            return []
        kind, gaps = descriptor.seqs.classify(seq)
        if kind == "duplicate":
            self.stats.add("duplicates")
            resent = seq <= descriptor.resumed_after  # the documented resume, not a fault
            self._log.log(
                logging.INFO if resent else logging.WARNING,
                "resent" if resent else "duplicate",
                "%s: run %s: seq_num %d seen before; duplicate dropped"
                + (" (published before the restart)" if resent else ""),
                self.source_name,
                descriptor.run_uid,
                seq,
            )
            return []
        self.stats.add("received")
        if kind == "late":
            self.stats.add("late")
            self._log.warning(
                "late",
                "%s: run %s: seq_num %d arrived late (after %d); analysed",
                self.source_name,
                descriptor.run_uid,
                seq,
                descriptor.seqs.highest,
            )
        self._count_gaps(descriptor, gaps)
        return self._make_frame(descriptor, doc, seq)

    def _count_gaps(self, descriptor: _Descriptor, gaps: int) -> None:
        if gaps > 0:
            self.stats.add("gaps", gaps)
            self._log.warning(
                "gap",
                "%s: run %s lost %d event(s) (seq_num up to %d)",
                self.source_name,
                descriptor.run_uid,
                gaps,
                descriptor.seqs.watermark,
            )

    def _make_frame(
        self, descriptor: _Descriptor, doc: Mapping[str, Any], seq: int
    ) -> list[StreamItem]:
        data = doc.get("data") or {}
        if not isinstance(data, Mapping):
            self.malformed("bad_document", "event %s: data is not a mapping", doc.get("uid"))
            return []
        r = descriptor.r if descriptor.r is not None else data.get(self.r_key)
        try:
            if r is None:
                raise FrameError(f"frame {seq} of {descriptor.run_uid}: no r grid ({self.r_key!r})")
            if self.data_key not in data:
                raise FrameError(f"frame {seq} of {descriptor.run_uid}: no {self.data_key!r}")
            # validated here, once: what a source yields is a ValidFrame
            frame = ValidFrame(
                source=descriptor.run_uid,
                seq=seq,
                time=float(doc.get("time", 0.0)),
                r=np.asarray(r, dtype=float),
                g=np.asarray(data[self.data_key], dtype=float),
                run_metadata=self._starts[descriptor.run_uid],
            )
        except (FrameError, TypeError, ValueError) as err:
            self.malformed("bad_frame", "%s", err)
            return []
        return [frame]

    def _on_stop(self, doc: Mapping[str, Any]) -> list[StreamItem]:
        """Close the run. Whatever else is wrong with the stop, the run closes: a stop dropped
        for a bad field would leave the run open for ever (issue 19: a non-integer
        ``num_events`` did that)."""
        run_uid = doc.get("run_start")
        if not isinstance(run_uid, str):
            raise TypeError(f"run_start must be a string, got {type(run_uid).__name__}")
        if run_uid in self._finished:
            self.malformed("rerun", "stop of run %s, which has already stopped", run_uid[:80])
            return []
        if self._starts.pop(run_uid, None) is None:
            self._log.warning(
                "orphan_stop",
                "%s: stop for run %s whose start was never seen",
                self.source_name,
                run_uid,
            )
            return []
        _bounded_add(self._finished, run_uid, _FINISHED_KEPT)
        counts, counts_ok = _event_counts(doc.get("num_events"))
        if not counts_ok:
            self.malformed(
                "bad_num_events",
                "stop of run %s: num_events %s is not a map of counts; the run closes without",
                run_uid[:80],
                str(doc.get("num_events"))[:80],
            )
        # Forget the run's descriptors: a long-running service must not grow without bound.
        # Events still missing now (or missing at the end, per num_events) are gaps.
        for descriptor in self._forget_descriptors(run_uid):
            if descriptor.wanted:
                last = counts.get(self.stream_name) if self.stream_name else None
                self._count_gaps(descriptor, descriptor.seqs.finish(last))
        if self.stream_name is not None:
            count = counts.get(self.stream_name)
        else:
            count = sum(counts.values()) if counts else None
        exit_status = doc.get("exit_status", "success")
        return [
            RunStop(
                uid=run_uid,
                time=_number(doc.get("time")),
                exit_status=exit_status[:100] if isinstance(exit_status, str) else "unknown",
                num_events=count,
            )
        ]
