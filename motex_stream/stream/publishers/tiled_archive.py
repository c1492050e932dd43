"""Derived runs into Tiled: each event stored whole or not at all, through Tiled outages.

Why not the stock ``TiledWriter`` as it stands: when one of its writes fails (Tiled killed, a
restart, a network cut), the event it was writing stays half in its cache (the arrays already
written are taken out of the cached row) and is written again with the next event. Measured:
Tiled killed after event 6 and back 8.8 s later left ``contributions`` 15 rows long while the
other keys had 20, rows from seq 7 on held later frames, and the stop said ``success``.

What this writer does instead:

- one stock run writer per run (:class:`.tiled_reopen.NewRun`); a write that fails discards
  it, with whatever half state it holds;
- the failed document and every later one wait in a bounded buffer (``max_pending`` events;
  start, descriptor and stop documents are never dropped);
- while Tiled does not answer, nothing else is sent: a cheap probe (one request, no retries)
  runs at most every ``retry_interval`` seconds, so the analysis thread is not held up by the
  tiled client's own retries on every frame;
- when Tiled answers again the run is read back from Tiled, the source of truth, and reopened
  (:class:`.tiled_reopen.ReopenedRun`): an event Tiled holds has its row in the ``internal``
  table, whole; array rows a failed event left without one are written over; events it holds
  are not written twice; the buffered documents follow, in order. So rows never shift;
- an event that cannot be buffered (the buffer is full) or that Tiled refuses (a 4xx) is lost:
  logged, counted (``motex_archive_events_lost_total``), raised as a sink error, and named in
  the run's stop: ``exit_status`` is not ``success`` and ``reason`` lists the missing
  ``seq_num`` values. Tiled still down at :meth:`TiledArchive.close` (after ``close_timeout``):
  the buffered events are lost the same way, and the run stays without a stop in Tiled (a
  restarted service reopens it, :mod:`.tiled_reopen`).

The first write that meets a dead Tiled still takes the tiled client's own retries (up to
``TILED_RETRY_TIMEOUT``, 45 s by default, tiled's setting) before it fails.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from motex_stream.stream.publishers.derived_run import (
    CHANGES_STREAM,
    PRIMARY_STREAM,
    STOPPED_EARLY,
    SinkWriteError,
    one_line,
)
from motex_stream.stream.publishers.tiled_reopen import (
    NewRun,
    ReopenedRun,
    StoredRun,
    read_stored_run,
)

log = logging.getLogger(__name__)

#: Events kept while Tiled does not answer (all runs together): ~1 kB each for 100 atoms.
DEFAULT_MAX_PENDING = 5000
#: Seconds between probes of a Tiled that did not answer.
DEFAULT_RETRY_INTERVAL = 2.0
#: Seconds :meth:`TiledArchive.close` waits for Tiled to take what is buffered.
DEFAULT_CLOSE_TIMEOUT = 10.0
_PROBE_TIMEOUT = 2.0


@dataclass
class ArchiveMetrics:
    """The archive's Prometheus series on one registry (shared by every archive using it)."""

    events_lost: Counter
    events_pending: Gauge


_METRICS: weakref.WeakKeyDictionary[CollectorRegistry, ArchiveMetrics] = weakref.WeakKeyDictionary()


def archive_metrics(registry: CollectorRegistry) -> ArchiveMetrics:
    """The archive series registered on ``registry`` (created at the first call), so any
    number of archives can report into the service's registry without a duplicate name."""
    found = _METRICS.get(registry)
    if found is None:
        lost = Counter(
            "motex_archive_events_lost",
            "Derived-run events that could not be written to Tiled (named in the run's stop)",
            ["stream"],
            registry=registry,
        )
        for stream in (PRIMARY_STREAM, CHANGES_STREAM):
            lost.labels(stream=stream)
        pending = Gauge(
            "motex_archive_events_pending",
            "Derived-run events waiting for Tiled to answer again",
            registry=registry,
        )
        found = _METRICS[registry] = ArchiveMetrics(lost, pending)
    return found


def is_transient(exc: BaseException) -> bool:
    """Tiled unreachable or failing on its side (transport error, 5xx, 429): worth a retry.

    A 4xx (a conflict, a refused document) would fail again. The cause chain is searched
    because the tiled client may wrap the httpx error.
    """
    import httpx

    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            break
        if isinstance(seen, httpx.TransportError | ConnectionError | TimeoutError):
            return True
        if isinstance(seen, httpx.HTTPStatusError):
            code = seen.response.status_code
            return code >= 500 or code == 429
        seen = seen.__cause__ or seen.__context__
    return False


class _Discard:
    """Writer of a run Tiled already holds complete (a replay): documents are dropped."""

    def __call__(self, name: str, doc: dict[str, Any]) -> None:
        return None


@dataclass
class _Run:
    """One derived run being archived: its documents so far and what still waits."""

    uid: str
    start: dict[str, Any]
    descriptors: dict[str, dict[str, Any]] = field(default_factory=dict)  # uid -> doc
    writer: Callable[[str, dict[str, Any]], Any] | None = None  # None: (re)open first
    fed: set[str] = field(default_factory=set)  # descriptor uids the writer has
    pending: deque[tuple[str, dict[str, Any]]] = field(default_factory=deque)
    lost: dict[str, list[int]] = field(default_factory=dict)  # stream -> seq_nums
    written: dict[str, set[int]] = field(default_factory=dict)  # stream -> seq_nums stored
    opened: bool = False  # a writer was opened once: from then on, a stored copy is ours
    stopped: bool = False

    def stream_of(self, descriptor_uid: str) -> str:
        doc = self.descriptors.get(descriptor_uid)
        return str(doc["name"]) if doc else "?"


def _seq_ranges(seqs: list[int]) -> str:
    """``[7, 8, 9, 12]`` → ``"7-9, 12"``: short enough for a stop reason."""
    parts: list[str] = []
    ordered = sorted(set(seqs))
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ", ".join(parts)


class TiledArchive:
    """Write derived runs into Tiled in the stock layout, whole events only (see the module).

    Writing goes through the stock ``bluesky_tiled_plugins`` writer code with
    ``max_array_size=0``: the stock writer keeps arrays of up to 16 elements in its SQL table,
    where they read back as strings; so every array is an array node, whatever the atom count.
    A run whose uid Tiled already holds (a restart or replay of the same analysis) cannot be
    created again (409):

    - if the stored run has its stop, it is complete: skipped with one warning;
    - if it has none (a service or replay killed mid-run, now resumed), or the ``abort`` stop
      of a clean shutdown in the middle of the raw run (:data:`STOPPED_EARLY`), it is reopened
      (:mod:`.tiled_reopen`) and continued.

    A start that Tiled refuses (a conflict in a race) raises once; the run's later documents
    are then dropped rather than failing one by one.
    """

    def __init__(
        self,
        client: Any,
        *,
        batch_size: int = 1,
        max_pending: int = DEFAULT_MAX_PENDING,
        retry_interval: float = DEFAULT_RETRY_INTERVAL,
        close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
        registry: CollectorRegistry | None = None,
    ) -> None:
        if batch_size != 1:
            # a batch is written at its last event: a failure could not say which were stored
            raise ValueError("TiledArchive writes each event on its own (batch_size=1)")
        if max_pending < 0:
            raise ValueError(f"max_pending must be >= 0, not {max_pending}")
        self.client = client.include_data_sources()
        self.batch_size = batch_size
        self.max_pending = max_pending
        self.retry_interval = retry_interval
        self.close_timeout = close_timeout
        self.metrics = archive_metrics(registry if registry is not None else CollectorRegistry())
        #: events this archive could not write, all runs together
        self.lost_events = 0
        self._runs: dict[str, _Run] = {}
        self._run_of_descriptor: dict[str, str] = {}
        self._skipped_runs: set[str] = set()
        self._skipped_descriptors: set[str] = set()
        self._pending_events = 0
        self._down = False
        self._last_probe = 0.0
        self._failures: list[str] = []

    def bind_metrics(self, registry: CollectorRegistry) -> None:
        """Report into ``registry`` (the service's) from now on; losses so far are carried."""
        before = self.metrics
        self.metrics = archive_metrics(registry)
        if before is self.metrics:
            return
        for run in self._runs.values():
            for stream, seqs in run.lost.items():
                self.metrics.events_lost.labels(stream=stream).inc(len(seqs))
        self.metrics.events_pending.set(self._pending_events)

    @property
    def pending_events(self) -> int:
        """Events waiting for Tiled to answer again."""
        return self._pending_events

    # -- what Tiled holds ------------------------------------------------------------------

    def stored_last_seq(self, raw_uid: str, model: str, analysis_version: str) -> int | None:
        """The last primary ``seq_num`` Tiled holds of an *unfinished* derived run of
        ``raw_uid`` (``model``, ``analysis_version``), read from Tiled; None if there is none.

        The analysis id (which prepared state) is not known before the first frame is
        analysed, so all unfinished derived runs of the raw run and model count, and the lowest
        wins: asking for a frame again costs an analysis, missing one loses it.
        """
        from tiled.queries import Key

        found = self.client.search(Key("start.original_run_uid") == raw_uid)
        found = found.search(Key("start.motex_model") == model)
        found = found.search(Key("start.analysis_version") == analysis_version)
        lasts = []
        for uid in list(found):
            stored = read_stored_run(self.client, uid)
            if stored is not None and not stored.finished:
                lasts.append(stored.last_seq(PRIMARY_STREAM))
        return min(lasts) if lasts else None

    # -- documents -------------------------------------------------------------------------

    def __call__(self, name: str, doc: dict[str, Any]) -> None:
        if name == "start":
            self._on_start(doc)
        else:
            self._on_document(name, doc)
        self._raise_failures()

    def close(self) -> None:
        """Give Tiled up to ``close_timeout`` s to take what is buffered; the rest is lost
        (counted, logged, raised), and its runs stay without a stop in Tiled."""
        deadline = time.monotonic() + self.close_timeout
        while self._waiting() and time.monotonic() < deadline:
            self._recover(force=True)
            if self._waiting():
                time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
        for run in list(self._runs.values()):
            for name, doc in run.pending:
                if name == "event":
                    self._lose(run, doc, "Tiled still unreachable when the service stopped")
            if run.pending:
                log.error(
                    "derived run %s: Tiled did not answer within %.0f s of shutdown; what it "
                    "holds of the run stays without a stop",
                    run.uid,
                    self.close_timeout,
                )
            run.pending.clear()
        self._pending_events = 0
        self.metrics.events_pending.set(0)
        self._raise_failures()

    def _on_start(self, doc: dict[str, Any]) -> None:
        uid = str(doc["uid"])
        run = self._runs[uid] = _Run(uid, dict(doc))
        if self._down:
            self._recover()
            return
        exc = self._try(run, "start", doc)
        if exc is None:
            return
        if is_transient(exc):
            self._go_down(exc)
            return
        del self._runs[uid]
        self._skipped_runs.add(uid)
        raise SinkWriteError(f"derived run {uid} cannot be written: {one_line(exc)}") from exc

    def _on_document(self, name: str, doc: dict[str, Any]) -> None:
        run_uid = self._run_uid(name, doc)
        if run_uid in self._skipped_runs or (
            name == "event" and doc["descriptor"] in self._skipped_descriptors
        ):
            if name == "descriptor":
                self._skipped_descriptors.add(doc["uid"])
            elif name == "stop":
                self._skipped_runs.discard(run_uid)
            return
        run = self._runs.get(run_uid) if run_uid else None
        if run is None:
            self._failures.append(f"a {name} document of a run whose start was not seen")
            return
        if name == "descriptor":
            run.descriptors[doc["uid"]] = doc
            self._run_of_descriptor[doc["uid"]] = run.uid
        if self._down or run.pending:
            self._recover(force=name == "stop")  # first: what waits goes before this one
        if self._down or run.pending:
            self._enqueue(run, name, doc)
        else:
            exc = self._try(run, name, doc)
            if exc is not None:
                self._failed(run, name, doc, exc, queue=True)
        self._finish_if_done(run)

    def _run_uid(self, name: str, doc: Mapping[str, Any]) -> str | None:
        if name in ("descriptor", "stop"):
            return str(doc["run_start"])
        if name == "event":
            return self._run_of_descriptor.get(str(doc["descriptor"]))
        return None

    # -- writing ---------------------------------------------------------------------------

    def _open(self, run: _Run) -> Callable[[str, dict[str, Any]], Any]:
        """A writer for ``run`` as Tiled holds it now, given the start and the descriptors."""
        stored = read_stored_run(self.client, run.uid)
        self._check_held(run, stored)
        writer: Callable[[str, dict[str, Any]], Any]
        if stored is None:
            writer = NewRun(self.client, batch_size=self.batch_size)
        else:
            stop = stored.node.metadata.get("stop") or {}
            early = str(stop.get("reason", "")).startswith(STOPPED_EARLY)
            if stored.finished and not early and not run.opened:
                # a rerun of an archived run (documented resume): information, not a warning
                log.info("derived run %s is already in Tiled; not written again", run.uid)
                run.opened = True
                return _Discard()
            writer = ReopenedRun(self.client, stored, batch_size=self.batch_size)
            if not run.opened:
                held = {k: len(v.seqs) for k, v in stored.streams.items()}
                log.info(  # resuming after a restart is normal operation (issue 22 item 6)
                    "derived run %s is in Tiled without a stop: reopened, it holds %s",
                    run.uid,
                    held or "no events",
                )
        writer("start", run.start)
        for uid, descriptor in run.descriptors.items():
            writer("descriptor", descriptor)
            run.fed.add(uid)
        run.opened = True
        return writer

    def _check_held(self, run: _Run, stored: StoredRun | None) -> None:
        """Events this archive wrote that Tiled no longer holds (it lost them: restored from
        an older backup, a temporary catalog) are lost too, and named like the others."""
        for stream, seqs in run.written.items():
            held = stored.streams.get(stream) if stored is not None else None
            gone = sorted(seqs - (held.held if held is not None else set()))
            for seq in gone:
                self._lose_seq(run, stream, seq, "Tiled held it but no longer does")
            seqs.difference_update(gone)

    def _try(self, run: _Run, name: str, doc: dict[str, Any]) -> Exception | None:
        """Write one document (opening the run's writer first if need be); on failure the
        writer is discarded with whatever half state it holds."""
        try:
            if run.writer is None:
                run.writer = self._open(run)
            if name == "start" or (name == "descriptor" and doc["uid"] in run.fed):
                return None  # given to the writer when it was opened
            run.writer(name, self._final_stop(run, doc) if name == "stop" else doc)
            if name == "descriptor":
                run.fed.add(doc["uid"])
            elif name == "event":
                stream = run.stream_of(str(doc["descriptor"]))
                run.written.setdefault(stream, set()).add(int(doc["seq_num"]))
            elif name == "stop":
                run.stopped = True
                if isinstance(run.writer, ReopenedRun) and run.writer.skipped:
                    log.info(
                        "derived run %s: %d event(s) Tiled held were not written again",
                        run.uid,
                        run.writer.skipped,
                    )
            return None
        except Exception as exc:  # any failure: the writer's state is no longer trusted
            log.debug("writing a %s document of %s failed", name, run.uid, exc_info=True)
            run.writer = None
            run.fed = set()
            return exc

    def _failed(
        self, run: _Run, name: str, doc: dict[str, Any], exc: Exception, *, queue: bool
    ) -> None:
        """A write failed: a transient failure keeps the document (``queue``: it is not in
        the buffer yet), any other loses it; the run is reopened from Tiled before the next."""
        if is_transient(exc):
            self._go_down(exc)
            if queue:
                self._enqueue(run, name, doc)
            return
        if not queue:
            self._dequeue(run)
        if name == "event":
            self._lose(run, doc, f"Tiled refused it: {one_line(exc)}")
        else:
            self._failures.append(
                f"derived run {run.uid}: a {name} document could not be written: {one_line(exc)}"
            )

    def _enqueue(self, run: _Run, name: str, doc: dict[str, Any]) -> None:
        if name == "event":
            if self._pending_events >= self.max_pending:
                self._lose(run, doc, f"{self.max_pending} events already wait for Tiled")
                return
            self._pending_events += 1
            self.metrics.events_pending.set(self._pending_events)
        run.pending.append((name, doc))

    def _dequeue(self, run: _Run) -> None:
        name, _ = run.pending.popleft()
        if name == "event":
            self._pending_events -= 1
            self.metrics.events_pending.set(self._pending_events)

    def _lose(self, run: _Run, doc: Mapping[str, Any], why: str) -> None:
        self._lose_seq(run, run.stream_of(str(doc["descriptor"])), int(doc["seq_num"]), why)

    def _lose_seq(self, run: _Run, stream: str, seq: int, why: str) -> None:
        run.lost.setdefault(stream, []).append(seq)
        self.lost_events += 1
        self.metrics.events_lost.labels(stream=stream).inc()
        self._failures.append(
            f"derived run {run.uid}: {stream} event seq_num {seq} not archived: {why}"
        )

    def _final_stop(self, run: _Run, doc: dict[str, Any]) -> dict[str, Any]:
        """The stop as written: one whose run lost events says so (status, reason, counts)."""
        lost = {s: v for s, v in run.lost.items() if v}
        if not lost:
            return doc
        n = sum(len(v) for v in lost.values())
        note = f"{n} event(s) could not be written to Tiled: " + "; ".join(
            f"{stream} seq_num {_seq_ranges(seqs)}" for stream, seqs in sorted(lost.items())
        )
        reason = str(doc.get("reason") or "")
        counts = {
            s: max(0, int(c) - len(lost.get(s, []))) for s, c in doc.get("num_events", {}).items()
        }
        return {
            **doc,
            "exit_status": "fail" if doc.get("exit_status") == "success" else doc["exit_status"],
            "reason": f"{reason}; {note}" if reason else note,
            "num_events": counts,
        }

    # -- outages ---------------------------------------------------------------------------

    def _go_down(self, exc: BaseException) -> None:
        if not self._down:
            log.warning(
                "Tiled does not answer (%s): derived-run documents wait (up to %d events) "
                "and are written when it answers again",
                one_line(exc),
                self.max_pending,
            )
        self._down = True
        self._last_probe = time.monotonic()

    def _probe(self) -> bool:
        """One request, no retries: is Tiled answering?"""
        context = self.client.context
        try:
            response = context.http_client.get(context.api_uri, timeout=_PROBE_TIMEOUT)
        except Exception as exc:
            log.debug("Tiled probe failed: %s", one_line(exc))
            return False
        return bool(response.status_code < 500)

    def _waiting(self) -> bool:
        return any(run.pending for run in self._runs.values())

    def _recover(self, *, force: bool = False) -> None:
        """If Tiled answers again, write what waits: run by run, in order."""
        if self._down:
            if not force and time.monotonic() - self._last_probe < self.retry_interval:
                return
            self._last_probe = time.monotonic()
            if not self._probe():
                return
            self._down = False
            log.info("Tiled answers again: writing %d buffered event(s)", self._pending_events)
        for run in list(self._runs.values()):
            while run.pending:
                name, doc = run.pending[0]
                exc = self._try(run, name, doc)
                if exc is None:
                    self._dequeue(run)
                    continue
                self._failed(run, name, doc, exc, queue=False)
                if self._down:
                    return
            self._finish_if_done(run)

    def _finish_if_done(self, run: _Run) -> None:
        if run.stopped and not run.pending:
            self._runs.pop(run.uid, None)
            for d in run.descriptors:
                self._run_of_descriptor.pop(d, None)

    def _raise_failures(self) -> None:
        failures, self._failures = self._failures, []
        if failures:
            raise SinkWriteError("; ".join(failures))


def tiled_writer(uri: str, api_key: str | None = None) -> TiledArchive:
    """The derived run into Tiled by the stock writer code, one event at a time (visible at
    once), whole events only, buffered through outages (:class:`TiledArchive`)."""
    from tiled.client import from_uri

    return TiledArchive(from_uri(uri, api_key=api_key))
