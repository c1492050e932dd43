"""The streaming service: receive on one thread per source, analyse on one worker, publish.

Why this shape: Bluesky's 0MQ transport drops silently when its consumer is slow, so reception
must never wait for analysis. Each source gets a receiver thread that only timestamps items and
queues them; a single worker runs the (CPU-heavy, seconds-long) analysis and feeds the sinks in
stream order.

Policies when analysis is slower than the beam:

- ``all``: every frame, in order. The queue is bounded in items and in bytes; when it is full
  the receiver waits (back-pressure): sources that can wait (Tiled replay, files, Kafka) slow
  down instead of losing data, and a 0MQ source keeps draining its socket into its own bounded
  backlog (counted drops beyond it). Hitting the bound is counted and logged at a bounded rate.
- ``latest``: a newly arrived frame replaces the frames of the same source still waiting; the
  dropped ones are counted as skipped. The view stays live with bounded latency.

Run boundaries (RunStart/RunStop) are never dropped and keep their order relative to frames,
so sinks always see start → frames → stop. A bad frame is logged and counted, never fatal.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from types import TracebackType
from typing import Any, Protocol, runtime_checkable

import numpy as np

from motex_stream.stream.config.service import (
    DEFAULT_FIT_AHEAD,
    DEFAULT_QUEUE_BYTES,
    DEFAULT_QUEUE_SIZE,
    Policy,
)
from motex_stream.stream.frames import (
    Frame,
    FrameError,
    RunStart,
    RunStop,
    StreamItem,
    ValidFrame,
    validate_frame,
)
from motex_stream.stream.headroom import Headroom
from motex_stream.stream.journal import RunJournal
from motex_stream.stream.live.analyzer_protocol import FrameAnalyzer, FrameResult
from motex_stream.stream.messages import AnalysisIdentity, PublishedFrame
from motex_stream.stream.metrics import StreamMetrics
from motex_stream.stream.publishers.base import Sink
from motex_stream.stream.ratelimit import RateLimitedLog
from motex_stream.stream.sources.base import FrameSource

log = logging.getLogger(__name__)


@runtime_checkable
class IdentifiesAnalysis(Protocol):
    """An analyzer that can say which analysis a frame got (``runner.LazyAnalyzer``): the
    message carries it and a derived run's uid depends on it.

    A capability of its own rather than a :class:`FrameAnalyzer` member with a default: the
    prepared analyzer and the test analyzers are handed to the service as they are and have
    no identity to give. The service sorts its analyzers by it once, when it is assembled.
    """

    def analysis_identity(self, frame: ValidFrame) -> AnalysisIdentity | None:
        """The prepared state and ``frame``'s run settings, hashed; None before preparation."""
        ...


@runtime_checkable
class FitsAhead(Protocol):
    """An analyzer that can start on the next frame's refit while it analyses this one
    (:mod:`motex_stream.stream.live.fit_ahead`): told, before each frame, which frame the
    queue holds next for it. The frame it is told may still be skipped or fail; the analyzer
    then drops what it did for it."""

    def fit_ahead(self, frame: ValidFrame) -> None:
        """``frame`` is the next frame this analyzer will be handed, as far as the queue
        knows now."""
        ...


@runtime_checkable
class SavesState(Protocol):
    """An analyzer whose warm-start progress can be saved on the way out (``serve`` and
    ``replay`` save every model that can before they exit)."""

    def save_state(self) -> object:
        """Persist the progress since the last periodic save; a failure is logged, not raised."""
        ...


_MAX_RUNS_KEPT = 100  # per-run counters kept for summary(); bounded for week-long services
_LATENCIES_KEPT = 10_000
_TRIM_AFTER_BYTES = 8 * 2**20  # a backlog this large is handed back to the OS once drained


def _release_memory() -> None:
    """Give freed heap back to the OS (glibc keeps it after a burst of large frames)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL(name).malloc_trim(0)


def _percentiles(values: np.ndarray) -> dict[str, float | int]:
    out: dict[str, float | int] = {"n": int(values.size)}
    if values.size:
        out |= {
            "p50": float(np.percentile(values, 50)),
            "p99": float(np.percentile(values, 99)),
            "max": float(values.max()),
        }
    return out


@dataclass
class RunCounters:
    """What happened to one run's frames (reported at its stop and in ``summary()``)."""

    model: str
    received: int = 0
    processed: int = 0
    skipped: int = 0
    failed: int = 0
    abandoned: int = 0  # received, still waiting at shutdown: neither analysed nor skipped
    stopped: bool = False


@dataclass(eq=False)
class _Entry:
    item: RunStart | ValidFrame | RunStop | None  # None: every receiver finished
    source: str
    received_at: float  # wall clock, goes into the message
    received_mono: float = field(default_factory=time.monotonic)  # for latency metrics
    nbytes: int = 0  # what the frame holds in memory (0 for run boundaries)


class _ItemQueue:
    """FIFO bounded in items and bytes that knows the two policies; boundaries never drop."""

    def __init__(
        self,
        maxsize: int,
        policy: Policy,
        on_skip: Callable[[_Entry], None],
        max_bytes: int = DEFAULT_QUEUE_BYTES,
        on_full: Callable[[int, int], None] | None = None,
    ) -> None:
        self.maxsize = maxsize
        self.max_bytes = max_bytes
        self.policy = policy
        self._on_skip = on_skip
        self._on_full = on_full
        self._items: deque[_Entry] = deque()
        self._cond = threading.Condition()
        self.nbytes = 0

    def _full(self, entry: _Entry) -> bool:
        if len(self._items) >= self.maxsize:
            return True
        # one frame larger than the whole bound still passes on its own
        return bool(self._items) and self.nbytes + entry.nbytes > self.max_bytes

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

    def put(self, entry: _Entry, stop: threading.Event, force: bool = False) -> bool:
        """Enqueue (blocking while full); False if ``stop`` was set before there was room."""
        skipped: list[_Entry] = []
        with self._cond:
            if self.policy == "latest" and isinstance(entry.item, Frame):
                kept: deque[_Entry] = deque()
                for e in self._items:
                    stale = isinstance(e.item, Frame) and e.source == entry.source
                    (skipped if stale else kept).append(e)
                self._items = kept
                self.nbytes = sum(e.nbytes for e in kept)
            waited = False
            while not force and self._full(entry) and not stop.is_set():
                if not waited and self._on_full is not None:
                    self._on_full(len(self._items), self.nbytes)
                waited = True
                self._cond.wait(0.1)
            accepted = force or not stop.is_set()
            if accepted:
                self._items.append(entry)
                self.nbytes += entry.nbytes
                self._cond.notify_all()
        for e in skipped:
            self._on_skip(e)
        return accepted

    def get(self, timeout: float) -> _Entry | None:
        with self._cond:
            if not self._items:
                self._cond.wait(timeout)
            if not self._items:
                return None
            entry = self._items.popleft()
            self.nbytes -= entry.nbytes
            self._cond.notify_all()
            return entry

    def peek(self) -> _Entry | None:
        """The entry ``get`` would return now, left in the queue (None when empty)."""
        with self._cond:
            return self._items[0] if self._items else None

    def drain(self) -> list[_Entry]:
        with self._cond:
            rest = list(self._items)
            self._items.clear()
            self.nbytes = 0
            self._cond.notify_all()
            return rest


class StreamService:
    """Receivers → bounded queue → one analysis worker → sinks, with metrics and a summary."""

    def __init__(
        self,
        analyzers: Mapping[str, FrameAnalyzer],
        sources: Sequence[FrameSource],
        sinks: Sequence[Sink],
        *,
        policy: Policy = "all",
        queue_size: int = DEFAULT_QUEUE_SIZE,
        metrics: StreamMetrics | None = None,
        default_model: str | None = None,
        restart_sources: bool = True,
        queue_bytes: int = DEFAULT_QUEUE_BYTES,
        journal: RunJournal | None = None,
        resume_after: Mapping[str, int] | None = None,
        fit_ahead: bool = DEFAULT_FIT_AHEAD,
    ) -> None:
        """``journal``: open runs persisted for a restart (see :mod:`..journal`).
        ``resume_after``: per run uid (``Frame.source``), the last seq already published by an
        earlier process; frames up to it are dropped as duplicates (``replay`` resuming).
        ``fit_ahead``: tell each analyzer that can (:class:`FitsAhead`) which frame waits next
        for it, so its refit runs beside the frame in progress.
        """
        if not analyzers:
            raise ValueError("StreamService needs at least one analyzer")
        if policy not in ("all", "latest"):
            raise ValueError(f"policy must be 'all' or 'latest', got {policy!r}")
        if queue_size < 1:
            raise ValueError("queue_size must be >= 1")
        self.analyzers = dict(analyzers)
        self.default_model = default_model or next(iter(self.analyzers))
        if self.default_model not in self.analyzers:
            raise ValueError(f"default_model {self.default_model!r} has no analyzer")
        self.sources = list(sources)
        names = [s.name for s in self.sources]
        shared = sorted({n for n in names if names.count(n) > 1})
        if shared:
            # Names key the metric labels and the 'latest' policy's per-source queue: two
            # sources with one name would merge their counters and drop each other's frames.
            raise ValueError(f"sources must have distinct names; shared: {', '.join(shared)}")
        self.sinks = list(sinks)
        self.policy: Policy = policy
        self.metrics = metrics or StreamMetrics()
        self._headroom = Headroom()  # worker utilisation; warns when a model falls behind
        # every labelled counter at 0 from the first scrape, so alerts see the first failure
        self.metrics.declare(list(self.analyzers), names, sinks=[s.name for s in self.sinks])
        for sink in self.sinks:  # sinks with series of their own (the Tiled archive's losses)
            sink.bind_metrics(self.metrics.registry)
        # which analyzers can name the analysis a frame got (asked once, here)
        self._identify = {
            model: a.analysis_identity
            for model, a in self.analyzers.items()
            if isinstance(a, IdentifiesAnalysis)
        }
        # which analyzers refit the next frame beside this one (asked once, here)
        self._ahead = {
            model: a.fit_ahead
            for model, a in self.analyzers.items()
            if fit_ahead and isinstance(a, FitsAhead)
        }
        self.restart_sources = restart_sources
        self._queue = _ItemQueue(
            queue_size, policy, self._count_skip, max_bytes=queue_bytes, on_full=self._count_full
        )
        self._ratelog = RateLimitedLog(log)
        self.journal = journal
        self._published_seq: dict[str, int] = dict(resume_after or {})
        self._resume_after = dict(resume_after or {})
        # per resumed run, the last seq each sink (by index) already holds: a sink behind the
        # others (a store that lost a batch) gets the frames it lacks, the others do not
        self._sink_held: dict[str, list[int]] = {}
        self._backlog_peak = 0
        self._stop = threading.Event()
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._receivers_left = 0
        self._run_model: dict[str, str] = {}
        self._runs: OrderedDict[str, RunCounters] = OrderedDict()
        self._totals = dict.fromkeys(
            (
                "received",
                "processed",
                "skipped",
                "failed",
                "gaps",
                "abandoned",
                "sink_errors",
                "duplicates",
                "late",
                "malformed",
                "backlog_full",
            ),
            0,
        )
        self._latencies: deque[float] = deque(maxlen=_LATENCIES_KEPT)
        self._ages: deque[float] = deque(maxlen=_LATENCIES_KEPT)
        self._seen_stats: dict[str, dict[str, int]] = {}
        self._resumed_upto: dict[str, int] = {}  # per resumed run: seq published before restart
        # an unpaced replay has no arrival rate to keep up with (headroom: no warning then)
        self._paced = {s.name: s.paced for s in self.sources}
        # source counters are synced by receivers and by each /metrics scrape (so a source
        # dropping only garbage is visible too); the lock keeps a delta from counting twice
        self._stats_lock = threading.Lock()
        self.metrics.on_scrape(self._sync_all_source_stats)
        self._started = False
        self._closed = False
        if journal is not None:
            for source in self.sources:
                source.attach_journal(journal)

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Start one receiver thread per source and the analysis worker; returns at once."""
        if self._started:
            raise RuntimeError("StreamService.start() called twice")
        self._started = True
        self._receivers_left = len(self.sources)
        self._threads = [
            threading.Thread(target=self._receive, args=(s,), name=f"recv-{s.name}", daemon=True)
            for s in self.sources
        ]
        self._threads.append(threading.Thread(target=self._work, name="analysis", daemon=True))
        for t in self._threads:
            t.start()
        if not self.sources:
            self._queue.put(_Entry(None, "", time.time()), self._stop, force=True)
        log.info(
            "service started: %d source(s), %d sink(s), models %s, policy %s",
            len(self.sources),
            len(self.sinks),
            ", ".join(self.analyzers),
            self.policy,
        )

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until every source is exhausted and the queue drained (True) or timeout."""
        return self._done.wait(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop receiving, finish the frame in progress, close sinks. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
            if t.is_alive():
                log.warning("thread %s did not stop within %.0f s", t.name, timeout)
        # Every frame received ends analysed, skipped or abandoned (issue 19: 80 of 88 frames
        # in a 0MQ source's backlog at SIGTERM vanished uncounted): what is still queued here,
        # and what sources received but had not handed over yet, is abandoned, counted.
        abandoned = [e.item for e in self._queue.drain() if isinstance(e.item, Frame)]
        for frame in abandoned:
            self._count_abandoned(frame, received=False)
        held = 0
        for source in self.sources:
            try:
                left = [item for item in source.drain_backlog() if isinstance(item, Frame)]
            except Exception:
                log.exception("cannot count the backlog of source %s", source.name)
                continue
            for frame in left:
                self._count_abandoned(frame, received=True)
            held += len(left)
        if abandoned or held:
            log.warning(
                "%d frame(s) were not analysed at shutdown (%d queued, %d in source backlogs)",
                len(abandoned) + held,
                len(abandoned),
                held,
            )
        if self.journal is not None and not self.journal.flush(timeout):
            log.warning("run journal: writes still pending at shutdown")
        self.metrics.queue_depth.set(0)
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as exc:
                # closing writes (a derived run's stop): a failure there is a sink error too
                log.error("closing sink %s failed: %s", sink.name, exc)
                self.metrics.sink_errors.labels(sink=sink.name).inc()
                with self._lock:
                    self._totals["sink_errors"] += 1
        log.info("service stopped: %s", {k: v for k, v in self.summary().items() if k != "runs"})

    def run(self, stop_event: threading.Event | None = None) -> dict[str, Any]:
        """Start, serve until ``stop_event`` is set or all sources end, stop; the summary."""
        self.start()
        try:
            while not self._done.wait(0.1):
                if stop_event is not None and stop_event.is_set():
                    break
        finally:
            self.stop()
        return self.summary()

    def __enter__(self) -> StreamService:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- reporting -----------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        """Counts, latency percentiles (receipt → publish, seconds) and per-run counters."""
        with self._lock:
            lat = np.array(self._latencies, dtype=float)
            age = np.array(self._ages, dtype=float)
            runs = {uid: asdict(c) for uid, c in self._runs.items()}
            totals = dict(self._totals)
        journal = dict(self.journal.counters) if self.journal is not None else {}
        return {
            "policy": self.policy,
            **totals,
            **{f"journal_{k}": v for k, v in journal.items()},
            "queue_depth": len(self._queue),
            "latency_s": _percentiles(lat),
            "age_s": _percentiles(age),
            "runs": runs,
        }

    # -- receiving -----------------------------------------------------------------------

    def _receive(self, source: FrameSource) -> None:
        backoff = 1.0
        try:
            while not self._stop.is_set():
                try:
                    for item in source.items(self._stop):
                        self._accept(source, item)
                        backoff = 1.0
                        if self._stop.is_set():
                            break
                    break  # the source ended normally
                except Exception:
                    log.exception("source %s failed", source.name)
                    if not self.restart_sources or self._stop.wait(backoff):
                        break
                    log.info("restarting source %s", source.name)
                    backoff = min(backoff * 2, 30.0)
        finally:
            self._sync_source_stats(source)
            with self._lock:
                self._receivers_left -= 1
                last = self._receivers_left == 0
            if last:
                self._queue.put(_Entry(None, source.name, time.time()), self._stop, force=True)

    def _accept(self, source: FrameSource, item: StreamItem) -> None:
        """The intake: every item a source yields passes here, on its receiver thread.

        A frame is validated here, once (a :class:`ValidFrame` from the document assembler
        or the file reader passes as it is): only usable frames are queued, and the worker
        and the analyzers never check one again. An unusable frame is counted as received
        and failed, and logged, like a frame the analysis refused.
        """
        received_at = time.time()
        if isinstance(item, Frame):
            done = self._published_seq.get(item.source)
            if done is not None and item.seq <= done:
                self._count_duplicate(source.name, item, done)
                return
            model = self._model_of(item)
            self.metrics.frame_arrived(model, received_at)
            with self._lock:
                self._totals["received"] += 1
                self._run_counters(item.source, model).received += 1
            try:
                item = validate_frame(item)
            except FrameError as exc:
                self._count_failed(item, model, f"unusable frame: {exc}", exc_info=False)
                self._sync_source_stats(source)
                return
        elif isinstance(item, RunStart):
            model = self._choose_model(item.metadata, item.uid)
            with self._lock:
                self._run_model[item.uid] = model
                self._run_counters(item.uid, model)
            if item.resumed_after is not None or item.uid in self._resume_after:
                self._resume_run(item, model)
        entry = _Entry(item, source.name, received_at)
        if isinstance(item, ValidFrame):
            entry.nbytes = int(item.g.nbytes + item.r.nbytes)
        self._sync_source_stats(source)
        if not self._queue.put(entry, self._stop, force=not isinstance(item, Frame)):
            assert isinstance(item, Frame)  # boundaries are forced in
            self._count_abandoned(item, received=False)  # waited for room until the stop
        self.metrics.queue_depth.set(len(self._queue))

    def _resume_run(self, start: RunStart, model: str) -> None:
        """A run taken up after a restart: frames every sink already holds are not redone.

        The journal (``serve``, carried in ``RunStart.resumed_after``, never in the start
        document) or ``resume_after`` (``replay``) says what was published.
        A sink that can tell is asked as well: JSON Lines (``last_published``) may hold one
        more, written just before a kill that came ahead of the journal's write; a store
        (``stored_last_seq``: the derived run in Tiled, read back) is the source of truth and
        may hold fewer. Analysis resumes after the lowest; each sink skips what it holds.
        """
        base = max(start.resumed_after or 0, self._resume_after.get(start.uid, 0))
        held: dict[int, int] = {}
        stored: dict[int, int] = {}
        for i, sink in enumerate(self.sinks):
            for ask, into in ((sink.last_published, held), (sink.stored_last_seq, stored)):
                try:
                    value = ask(start.uid, model)
                except Exception as exc:
                    log.warning("cannot ask sink %s about run %s: %s", sink, start.uid, exc)
                    continue
                if value is not None:
                    into[i] = int(value)
        top = max([base, *held.values()])
        per_sink = [stored.get(i, max(held.get(i, top), base)) for i in range(len(self.sinks))]
        done = min(per_sink, default=top)
        with self._lock:
            self._published_seq[start.uid] = done
            self._resumed_upto[start.uid] = done
            if any(h > done for h in per_sink):
                self._sink_held[start.uid] = per_sink
        log.info("run %s resumed after seq %d (sinks hold %s)", start.uid, done, per_sink)

    def _count_duplicate(self, source: str, frame: Frame, done: int) -> None:
        self.metrics.seq_duplicates.labels(source=source).inc()
        with self._lock:
            self._totals["duplicates"] += 1
            resumed = frame.seq <= self._resumed_upto.get(frame.source, 0)
        if resumed:  # the documented resume: what was published before the restart is skipped
            self._ratelog.log(
                logging.INFO,
                "resumed",
                "frame %d of %s was published before the restart (resumed after %d); skipped",
                frame.seq,
                frame.source,
                done,
            )
            return
        self._ratelog.warning(
            "published",
            "frame %d of %s was published before (up to %d); dropped",
            frame.seq,
            frame.source,
            done,
        )

    def _count_full(self, depth: int, nbytes: int) -> None:
        """The bounded queue is full and a receiver has to wait (policy ``all``)."""
        self.metrics.backlog_full.labels(where="service").inc()
        with self._lock:
            self._totals["backlog_full"] += 1
        self._ratelog.warning(
            "backlog_full",
            "backlog full (%d items, %.0f MB): receivers wait until analysis catches up",
            depth,
            nbytes / 1e6,
        )

    def _count_abandoned(self, frame: Frame, received: bool) -> None:
        """A frame that will not be analysed because the service is stopping (``received``:
        it never left its source's backlog, so it is counted as received here too)."""
        model = self._model_of(frame)
        with self._lock:
            counters = self._run_counters(frame.source, model)
            if received:
                self._totals["received"] += 1
                counters.received += 1
            self._totals["abandoned"] += 1
            counters.abandoned += 1

    def _count_skip(self, entry: _Entry) -> None:
        assert isinstance(entry.item, Frame)
        model = self._model_of(entry.item)
        self.metrics.frames_skipped.labels(model=model).inc()
        with self._lock:
            self._totals["skipped"] += 1
            self._run_counters(entry.item.source, model).skipped += 1
        log.debug("skipped stale frame %d of %s", entry.item.seq, entry.item.source)

    def _sync_all_source_stats(self) -> None:
        """Every source's stats into the metrics (a scrape hook: live source counters)."""
        for source in self.sources:
            self._sync_source_stats(source)

    def _sync_source_stats(self, source: FrameSource) -> None:
        """Turn the source's cumulative ``stats`` (a SourceStats) into metric increments."""
        with self._stats_lock:
            self._sync_source_stats_locked(source)

    def _sync_source_stats_locked(self, source: FrameSource) -> None:
        stats = source.stats.as_dict()
        seen = self._seen_stats.setdefault(source.name, {})
        counters = {
            "gaps": self.metrics.seq_gaps,
            "orphans": self.metrics.source_orphans,
            "malformed": self.metrics.source_malformed,
            "duplicates": self.metrics.seq_duplicates,
            "late": self.metrics.seq_late,
        }
        for name, counter in counters.items():
            value = stats[name]
            delta = value - seen.get(name, 0)
            if delta > 0:
                counter.labels(source=source.name).inc(delta)
                seen[name] = value
                if name in self._totals:
                    with self._lock:
                        self._totals[name] += delta
        delta = stats["overflow"] - seen.get("overflow", 0)
        if delta > 0:
            self.metrics.backlog_full.labels(where=source.name).inc(delta)
            seen["overflow"] = stats["overflow"]
        for kind, value in source.stats.kinds().items():
            key = "kind:" + kind
            delta = value - seen.get(key, 0)
            if delta > 0:
                self.metrics.source_malformed_kind.labels(source=source.name, kind=kind).inc(delta)
                seen[key] = value

    # -- model choice --------------------------------------------------------------------

    def _choose_model(self, metadata: Mapping[str, Any], uid: str) -> str:
        wanted = metadata.get("motex_model")
        if wanted is None:
            return self.default_model
        if str(wanted) in self.analyzers:
            return str(wanted)
        log.error(
            "run %s asks for motex_model=%r, which is not loaded (have: %s); using %r",
            uid,
            wanted,
            ", ".join(self.analyzers),
            self.default_model,
        )
        return self.default_model

    def _model_of(self, frame: Frame) -> str:
        model = self._run_model.get(frame.source)
        if model is not None:
            return model
        wanted = frame.run_metadata.get("motex_model")
        return (
            str(wanted)
            if wanted is not None and str(wanted) in self.analyzers
            else (self.default_model)
        )

    def _run_counters(self, uid: str, model: str) -> RunCounters:
        """Per-run counters (call with ``self._lock`` held); the oldest stopped runs go."""
        counters = self._runs.get(uid)
        if counters is None:
            counters = self._runs[uid] = RunCounters(model)
            while len(self._runs) > _MAX_RUNS_KEPT:
                self._runs.popitem(last=False)
        return counters

    # -- analysing -----------------------------------------------------------------------

    def _work(self) -> None:
        try:
            while True:
                entry = self._queue.get(0.1)
                self.metrics.queue_depth.set(len(self._queue))
                self.metrics.backlog_bytes.set(self._queue.nbytes)
                self._backlog_peak = max(self._backlog_peak, self._queue.nbytes)
                if self._backlog_peak > _TRIM_AFTER_BYTES and self._queue.nbytes == 0:
                    # after a burst: hand the frames' memory back instead of keeping it
                    self._backlog_peak = 0
                    _release_memory()
                if entry is None:
                    if self._stop.is_set():
                        return
                    continue
                if entry.item is None:
                    return
                try:
                    self._handle(entry)
                except Exception:  # a bug in our own bookkeeping must not stop the stream
                    log.exception("unexpected error while handling %r", type(entry.item).__name__)
                if self._stop.is_set():
                    return
        finally:
            self._done.set()

    def _handle(self, entry: _Entry) -> None:
        item = entry.item
        if isinstance(item, RunStart):
            log.info("run %s started (model %s)", item.uid, self._run_model.get(item.uid))
            self._to_sinks("on_run_start", lambda sink: sink.on_run_start(item))
        elif isinstance(item, RunStop):
            self._to_sinks("on_run_stop", lambda sink: sink.on_run_stop(item))
            if self.journal is not None:
                self.journal.close_run(item.uid)
            with self._lock:
                self._run_model.pop(item.uid, None)
                self._published_seq.pop(item.uid, None)
                self._sink_held.pop(item.uid, None)
                counters = self._runs.get(item.uid)
                if counters is not None:
                    counters.stopped = True
            log.info("run %s stopped (%s): %s", item.uid, item.exit_status, counters)
        elif isinstance(item, ValidFrame):
            self._analyze(entry, item)

    def _analyze(self, entry: _Entry, frame: ValidFrame) -> None:
        """Analyse one frame (validated at intake), publish it to every sink that lacks it,
        journal it and record its metrics; a failure is counted, never raised."""
        model = self._model_of(frame)
        analyzer = self.analyzers[model]
        started = time.monotonic()
        self._announce_next(model)
        try:
            result: FrameResult = analyzer.analyze(frame)
        except FrameError as exc:
            self._count_failed(frame, model, f"unusable frame: {exc}", exc_info=False)
            return
        except Exception as exc:
            self._count_failed(frame, model, f"analysis failed: {exc!r}", exc_info=True)
            return
        # published_at is taken here, just before the sinks, so the latency in the message
        # matches what the end-to-end metric measures.
        identify = self._identify.get(model)
        published = PublishedFrame.of(
            result,
            frame,
            received_at=entry.received_at,
            analysis=identify(frame) if identify is not None else None,
        )
        held = self._sink_held.get(frame.source)
        skip = {i for i, h in enumerate(held) if frame.seq <= h} if held else set()
        self._to_sinks("publish", lambda sink: sink.publish(published), skip=skip)
        if self.journal is not None:
            self.journal.record_published(frame.source, model, frame.seq)
        latency = time.monotonic() - entry.received_mono
        # the frame's own time: what the beamline sees, including any wait before receipt
        age = published.published_at - frame.time if frame.time > 0 else None
        m = self.metrics
        m.end_to_end_seconds.observe(latency)
        if age is not None:
            m.frame_age_seconds.observe(max(0.0, age))
        for stage, seconds in result.timing.items():
            m.stage_seconds.labels(stage=stage).observe(float(seconds))
        if result.model_quality.mae is not None:
            m.model_mae.labels(model=model).set(float(result.model_quality.mae))
        if result.n_refit:
            m.fits.labels(model=model).inc(result.n_refit)
        if result.change is not None:
            m.structure_changes.labels(model=model).inc()
        m.frames_processed.labels(model=model).inc()
        m.cpu_utilisation.set(
            self._headroom.record(
                model,
                entry.received_mono,
                started,
                time.monotonic(),
                paced=self._paced.get(entry.source, True),
            )
        )
        with self._lock:
            self._latencies.append(latency)
            if age is not None:
                self._ages.append(age)
            self._totals["processed"] += 1
            self._run_counters(frame.source, model).processed += 1

    def _announce_next(self, model: str) -> None:
        """Tell ``model``'s analyzer the frame waiting next in the queue, when it is one of
        its frames (only a frame already received: one frame ahead, no waiting). A failure
        here is logged: the frame in hand is analysed all the same."""
        announce = self._ahead.get(model)
        if announce is None:
            return
        upcoming = self._queue.peek()
        if upcoming is None or not isinstance(upcoming.item, ValidFrame):
            return
        if self._model_of(upcoming.item) != model:
            return
        try:
            announce(upcoming.item)
        except Exception:
            log.exception("cannot announce frame %d of %s", upcoming.item.seq, upcoming.source)

    def _count_failed(self, frame: Frame, model: str, why: str, exc_info: bool) -> None:
        log.error("frame %d of %s: %s", frame.seq, frame.source, why, exc_info=exc_info)
        self.metrics.frames_failed.labels(model=model).inc()
        with self._lock:
            self._totals["failed"] += 1
            self._run_counters(frame.source, model).failed += 1

    def _to_sinks(
        self, method: str, call: Callable[[Sink], None], skip: set[int] | None = None
    ) -> None:
        """``call`` (which calls ``method``) on every sink but those in ``skip`` (by index:
        they hold it); a failing sink is logged and the others still run."""
        for i, sink in enumerate(self.sinks):
            if skip and i in skip:
                continue
            try:
                call(sink)
            except Exception as exc:
                log.error(
                    "sink %s.%s failed: %s",
                    sink.name,
                    method,
                    exc,
                    exc_info=log.isEnabledFor(logging.DEBUG),
                )
                self.metrics.sink_errors.labels(sink=sink.name).inc()
                with self._lock:
                    self._totals["sink_errors"] += 1
