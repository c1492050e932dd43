"""Assemble a running service from one typed :class:`Config`, whoever wrote it.

Keeps `serve`, `replay` and `demo` on one code path: `serve` reads its config from a file,
`replay` and `demo` translate their flags into one, and all three call :func:`build_service`
(analyzers that prepare themselves on first use, sources, sinks, metrics, and a
:class:`StreamService` that ties them together).
"""

from __future__ import annotations

import hashlib
import json
import logging
import signal
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from motex_stream.analysis.settings import LiveModelSettings
from motex_stream.analysis.steps import UNIFORM_STEP
from motex_stream.stream.config import Config, ServiceConfig
from motex_stream.stream.config.service import DEFAULT_SAVE_EVERY, DEFAULT_SAVE_INTERVAL_S
from motex_stream.stream.frames import Frame, ValidFrame
from motex_stream.stream.journal import RunJournal
from motex_stream.stream.live.analyzer import MotexFrameAnalyzer
from motex_stream.stream.live.analyzer_protocol import FrameAnalyzer, FrameResult
from motex_stream.stream.live.fit_ahead import OUTCOMES as FIT_AHEAD_OUTCOMES
from motex_stream.stream.messages import AnalysisIdentity
from motex_stream.stream.metrics import MetricsServer, ModelState, StreamMetrics
from motex_stream.stream.service import FitsAhead, IdentifiesAnalysis, SavesState, StreamService

if TYPE_CHECKING:
    from motex_stream.stream.dashboard import DashboardSink

log = logging.getLogger(__name__)

JOURNAL_DIR = "@runs"  # '@' is not allowed in model names, so no model folder can collide


class LazyAnalyzer(FrameAnalyzer, IdentifiesAnalysis, SavesState, FitsAhead):
    """Prepares its model from saved state or a reference at start, else on the first frame.

    Preparation (catalogue fit, hyperparameter search) takes seconds; doing it on the first
    frame keeps the service usable without a reference file, at the cost of one slow frame.
    Saved state that is unusable is moved aside by the analyzer and counts as no state, so a
    corrupt state folder never stops the service. Warm-start progress is saved every
    ``save_every`` frames. ``on_state(name, state)`` hears each step (preparing, waiting for
    the first frame, ready), so /metrics and /healthz can tell a cold start from a hang.
    ``dask``: the Dask scheduler its catalogue fits run on (``[service] dask``; None: here).
    """

    def __init__(
        self,
        settings: LiveModelSettings,
        state_dir: Path | None = None,
        save_every: int | None = DEFAULT_SAVE_EVERY,
        save_interval: float | None = DEFAULT_SAVE_INTERVAL_S,
        on_state: Callable[[str, ModelState], None] | None = None,
        dask: str | None = None,
    ) -> None:
        self.settings = settings
        self.dask = dask
        self._on_state = on_state or (lambda _name, _state: None)
        self.name = settings.name
        self.reference = settings.reference
        self.state_dir = state_dir
        self.inner: MotexFrameAnalyzer | None = None
        self.save_every = save_every
        self.save_interval = save_interval
        self._lock = threading.Lock()
        self._on_state(self.name, "preparing")
        self.inner = MotexFrameAnalyzer.prepare(settings, self.reference, state_dir, dask)
        if self.inner is not None:
            self.inner.save_every, self.inner.save_interval = save_every, save_interval
        self._on_state(self.name, "waiting" if self.inner is None else "ready")

    @property
    def fit_r(self) -> np.ndarray:
        if self.inner is None:
            step = UNIFORM_STEP
            return np.arange(self.settings.rmin, self.settings.rmax + step / 2, step)
        return self.inner.fit_r

    def analyze(self, frame: Frame) -> FrameResult:
        with self._lock:
            if self.inner is None:
                log.info("preparing model %s on frame %d of %s", self.name, frame.seq, frame.source)
                self._on_state(self.name, "preparing")
                try:
                    self.inner = MotexFrameAnalyzer.prepare(
                        self.settings, frame, self.state_dir, self.dask
                    )
                finally:
                    self._on_state(self.name, "waiting" if self.inner is None else "ready")
                self.inner.save_every = self.save_every
                self.inner.save_interval = self.save_interval
        return self.inner.analyze(frame)

    def save_state(self) -> None:
        if self.inner is not None:
            self.inner.save_state()

    def fit_ahead(self, frame: ValidFrame) -> None:
        """The prepared analyzer's :meth:`MotexFrameAnalyzer.fit_ahead`; nothing before the
        model is prepared (that frame prepares it)."""
        if self.inner is not None:
            self.inner.fit_ahead(frame)

    def analysis_identity(self, frame: Frame) -> AnalysisIdentity | None:
        """Which analysis ``frame`` got: the prepared model plus the run's settings.

        The model part is the preparation's digest (``live_state.preparation_digest``:
        settings fingerprint, catalogue, fit grid, the preparation's search and chosen
        hyperparameters), fixed when the model was prepared and saved with its state. A
        rebuild replaces the serving search and hyperparameters but not this digest, so a
        resumed or replayed run keeps its derived uid, while a model prepared on other data
        gets another.
        """
        inner = self.inner
        if inner is None:
            return None
        settings = inner.run_settings(frame).model_dump(mode="json")
        blob = json.dumps(settings, sort_keys=True).encode()
        digest = hashlib.sha256(inner.preparation.encode() + blob).hexdigest()[:16]
        return AnalysisIdentity(digest, settings)


def check_dask(address: str | None) -> None:
    """Refuse ``[service] dask`` / ``--dask`` at assembly when dask.distributed is missing,
    and say where the catalogue fits will run."""
    if address:
        from motex_stream.analysis import scale_out

        scale_out.require_distributed()
        log.info("catalogue fits run on the Dask cluster %s", address)


def analyzers_from_config(
    config: Config, metrics: StreamMetrics | None = None
) -> dict[str, LazyAnalyzer]:
    """One analyzer per model, prepared (or restored) in turn; ``metrics`` follows each.

    ``service.state_dir`` None (a replay without ``--state-dir``): prepared afresh, never saved.
    """
    state = config.service.state_dir
    every, interval = config.service.save_every, config.service.save_interval_s
    on_state = metrics.set_model_state if metrics is not None else None
    if metrics is not None:
        metrics.declare_models(m.name for m in config.models)
    dask = config.service.dask
    return {m.name: LazyAnalyzer(m, state, every, interval, on_state, dask) for m in config.models}


def build_service(
    config: Config,
    metrics: StreamMetrics | None = None,
    *,
    resume_after: Callable[[], Mapping[str, int]] | None = None,
) -> StreamService:
    """Sources, sinks and analyzers of a validated config, in a service not yet started.

    The one assembly of ``serve``, ``replay`` and ``demo``: each command turns what it was
    given (a file, flags) into a :class:`Config` and calls this. The run journal lives in the
    state folder, so a config without one (``state_dir`` None) keeps no journal either.
    The service's own dashboard (``service.dashboard_port``) is the last sink; it is started
    first, so its page answers while the models prepare.
    ``resume_after`` (``replay`` resuming into its output): asked once the sinks are open (a
    JSON Lines sink cuts a half-written last line on opening), per run uid the last seq an
    earlier process published; those frames are dropped as duplicates.
    """
    check_dask(config.service.dask)
    from motex_stream.stream.publishers import Sink, make_sinks
    from motex_stream.stream.sources import make_source

    metrics = metrics or StreamMetrics()
    dashboard = dashboard_sink(config.service)
    try:
        analyzers = analyzers_from_config(config, metrics)
        metrics.on_scrape(_state_counts(analyzers, metrics))
        sources = [make_source(s) for s in config.sources]
        sinks: list[Sink] = make_sinks(config)  # each named as configured: its errors' label
    except BaseException:
        if dashboard is not None:
            dashboard.close()
        raise
    if dashboard is not None:
        sinks.append(dashboard)
    state_dir = config.service.state_dir
    return StreamService(
        analyzers,
        sources,
        sinks,
        policy=config.service.policy,
        queue_size=config.service.queue_size,
        queue_bytes=config.service.queue_bytes,
        journal=None if state_dir is None else RunJournal(state_dir / JOURNAL_DIR),
        metrics=metrics,
        default_model=config.default_model,
        restart_sources=config.service.restart_sources,
        fit_ahead=config.service.fit_ahead,
        resume_after=None if resume_after is None else resume_after(),
    )


def dashboard_sink(service: ServiceConfig) -> DashboardSink | None:
    """The service's own dashboard (``[service] dashboard_port``), or None when it is off."""
    if not service.dashboard_port:
        return None
    from motex_stream.stream.dashboard import DashboardSink

    # named "dashboard": its metric label (sink=...)
    sink = DashboardSink(service.dashboard_host, service.dashboard_port, name="dashboard")
    log.info("dashboard on %s", sink.server.url)
    return sink


def save_states(service: StreamService) -> None:
    """Persist each model's progress since its last periodic save (a failed save is logged,
    never raised): a rerun, or a ``serve`` on the same state folder, continues from here."""
    for analyzer in service.analyzers.values():
        if isinstance(analyzer, SavesState):
            analyzer.save_state()


def _analyzer_counts(
    inner: MotexFrameAnalyzer, name: str, metrics: StreamMetrics
) -> dict[Any, int]:
    """The counts model ``name``'s analyzer keeps that /metrics carries, keyed by the
    counter each goes to: failed state saves, refused generations, and what became of each
    refit done ahead (one counter per outcome)."""
    counts: dict[Any, int] = {
        metrics.state_save_failures.labels(model=name): inner.state_save_failures,
        metrics.state_load_fallbacks.labels(model=name): inner.state_load_fallbacks,
    }
    for outcome, n in inner.ahead.counts().items():
        counts[metrics.fits_ahead.labels(model=name, outcome=outcome)] = n
    return counts


def _state_counts(analyzers: dict[str, LazyAnalyzer], metrics: StreamMetrics) -> Callable[[], None]:
    """A scrape hook that carries each model's counts (:func:`_analyzer_counts`: failed state
    saves and refused generations, see :mod:`motex_stream.stream.live.live_state`; refits done
    ahead and what became of them, see :mod:`motex_stream.stream.live.fit_ahead`) into
    /metrics, each increment once however often scraped."""
    seen: dict[str, tuple[MotexFrameAnalyzer, dict[Any, int]]] = {}  # model: (analyzer, counts)
    lock = threading.Lock()
    for name in analyzers:  # exported at 0 from start-up, as every labelled counter
        for outcome in FIT_AHEAD_OUTCOMES:
            metrics.fits_ahead.labels(model=name, outcome=outcome)

    def sync() -> None:
        with lock:
            for name, lazy in analyzers.items():
                inner = lazy.inner
                if inner is None:
                    continue
                last = seen.get(name)
                before = {} if last is None or last[0] is not inner else last[1]
                now = _analyzer_counts(inner, name, metrics)
                for counter, n in now.items():
                    if n > before.get(counter, 0):
                        counter.inc(n - before.get(counter, 0))
                seen[name] = (inner, now)

    return sync


def serve_until_signalled(service: StreamService, server: MetricsServer | None = None) -> dict:
    """Run until SIGINT/SIGTERM or until every source ends; persist model state on the way out.

    ``server`` (started by the caller before the models were prepared, so /metrics answered
    throughout) is closed on the way out.
    """
    stop = threading.Event()

    def _handler(signum: int, _frame: Any) -> None:
        log.info("signal %d: stopping after the frame in progress", signum)
        service.metrics.set_state("stopping")
        stop.set()

    previous = {s: signal.signal(s, _handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        service.metrics.set_state("ready")
        summary = service.run(stop)
    finally:
        service.metrics.set_state("stopping")
        for s, h in previous.items():
            signal.signal(s, h)
        save_states(service)
        if server is not None:
            server.close()
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    keys = ("received", "processed", "skipped", "failed", "gaps", "sink_errors")
    counts = ", ".join(f"{k} {summary.get(k, 0)}" for k in keys)
    lat = summary.get("latency_s", {}) or {}
    p50, p99 = lat.get("p50"), lat.get("p99")
    if p50 is None:
        return counts
    return f"{counts}; latency p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms"
