"""Prometheus metrics of the streaming service.

Why a dedicated registry: the default global registry refuses a second metric with the same
name, so two services in one process (tests, several detectors) would collide. Each
:class:`StreamMetrics` owns a ``CollectorRegistry`` and the HTTP server exports that one.

What to alert on: ``time() - motex_last_frame_timestamp_seconds`` (the beam or the source is
gone), ``motex_seq_gaps_total`` (0MQ dropped frames, silently), ``motex_frames_skipped_total``
(the analysis cannot keep up under policy ``latest``), ``motex_queue_depth`` near the queue
size (back-pressure under policy ``all``), and ``motex_end_to_end_seconds``.

Why :meth:`StreamMetrics.declare`: a labelled counter has no series until its first
increment, so ``increase()`` in an alert never sees the step from nothing to 1 and the first
failure goes unnoticed. The service declares every model, source and sink at start-up, so all
their counters are exported at 0 from the first scrape.

Why :meth:`StreamMetrics.on_scrape`: a source counts what it drops (malformed input, gaps) in
its own thread-safe stats, and the service turned those into metric increments only when the
source handed over a good document. A flood of garbage on an idle service, or a detector
emitting nothing but NaN frames, was then invisible on /metrics. Hooks run at every
collection, before any counter is read, so source counters are live at each scrape.

Why a state (``motex_service_state``) and an HTTP server of our own: ``serve`` prepares its
models (catalogue fits, hyperparameter search; 30 s on 2,000 motifs, minutes on more) before
it can analyse a frame. /metrics and /healthz are served from the first second of that, with
the state ``preparing`` and the preparation's progress, so ``up`` stays 1 and the
``MotexStreamDown`` alert does not fire on every cold start.
"""

from __future__ import annotations

import json
import logging
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

# Latency buckets in seconds: a frame takes ~0.1-30 s to analyse; transport parts are ms.
_STAGE_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_E2E_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300)
#: The stages the analyzer times (``FrameResult.timing``); declared so each has a series.
ANALYSIS_STAGES = ("regrid", "fit", "train", "explain", "intervals", "confirm")
#: Counters labelled by model / by source, declared at 0 by :meth:`StreamMetrics.declare`.
_PER_MODEL = (
    "frames_received",
    "frames_processed",
    "frames_skipped",
    "frames_failed",
    "fits",
    "structure_changes",
)
_PER_SOURCE = ("seq_gaps", "source_orphans", "source_malformed", "seq_duplicates", "seq_late")

ServiceState = Literal["preparing", "ready", "stopping"]
#: preparing: models are being loaded or prepared, no frame is analysed yet; ready: frames are
#: received and analysed; stopping: a signal came, the frame in progress is finished.
SERVICE_STATES: tuple[ServiceState, ...] = ("preparing", "ready", "stopping")
ModelState = Literal["preparing", "waiting", "ready"]
#: preparing: loading saved state or preparing on the reference; waiting: no reference and no
#: saved state, so it prepares on its first frame; ready: analyses frames.
MODEL_STATES: tuple[ModelState, ...] = ("preparing", "waiting", "ready")


class _ScrapeHooks(Collector):
    """Runs callables at each collection and exports nothing itself.

    Registered before every metric of :class:`StreamMetrics`: the registry collects in
    registration order, so the hooks have updated the counters by the time they are read.
    """

    def __init__(self) -> None:
        self.hooks: list[Callable[[], None]] = []
        self._lock = threading.Lock()

    def collect(self) -> Iterator[Metric]:
        with self._lock:  # two scrapes at once must not sync the same deltas twice
            for hook in list(self.hooks):
                try:
                    hook()
                except Exception:  # a broken hook must not take /metrics down with it
                    log.exception("metrics scrape hook %r failed", hook)
        return iter(())


class StreamMetrics:
    """All service metrics, registered on ``self.registry``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self._scrape_hooks = _ScrapeHooks()
        r.register(self._scrape_hooks)
        self.frames_received = Counter(
            "motex_frames_received", "Frames received from sources", ["model"], registry=r
        )
        self.frames_processed = Counter(
            "motex_frames_processed", "Frames analysed and published", ["model"], registry=r
        )
        self.frames_skipped = Counter(
            "motex_frames_skipped",
            "Stale frames dropped under policy 'latest'",
            ["model"],
            registry=r,
        )
        self.frames_failed = Counter(
            "motex_frames_failed", "Frames that could not be analysed", ["model"], registry=r
        )
        self.seq_gaps = Counter(
            "motex_seq_gaps", "Missing seq_num values reported by sources", ["source"], registry=r
        )
        self.source_orphans = Counter(
            "motex_source_orphans",
            "Events whose start/descriptor the source never saw",
            ["source"],
            registry=r,
        )
        self.source_malformed = Counter(
            "motex_source_malformed", "Documents a source could not parse", ["source"], registry=r
        )
        self.sink_errors = Counter(
            "motex_sink_errors", "Exceptions raised by sinks", ["sink"], registry=r
        )
        self.source_malformed_kind = Counter(
            "motex_source_malformed_kind",
            "Inputs a source dropped as malformed, by kind (unknown_name, undecodable, ...)",
            ["source", "kind"],
            registry=r,
        )
        self.seq_duplicates = Counter(
            "motex_seq_duplicates",
            "Events dropped because their seq_num was already seen or published",
            ["source"],
            registry=r,
        )
        self.seq_late = Counter(
            "motex_seq_late",
            "Events analysed although a higher seq_num of their run came first",
            ["source"],
            registry=r,
        )
        self.backlog_full = Counter(
            "motex_backlog_full",
            "Times a bounded backlog was full: frames dropped (source) or receiver waiting "
            "(service, policy all)",
            ["where"],
            registry=r,
        )
        self.backlog_bytes = Gauge(
            "motex_backlog_bytes", "Bytes of frames waiting for the analysis worker", registry=r
        )
        self.frame_age_seconds = Histogram(
            "motex_frame_age_seconds",
            "Frame's own time (event time) -> message published: the latency the beamline sees",
            buckets=_E2E_BUCKETS,
            registry=r,
        )
        self.stage_seconds = Histogram(
            "motex_stage_seconds",
            "Time per analysis stage, as reported by the analyzer",
            ["stage"],
            buckets=_STAGE_BUCKETS,
            registry=r,
        )
        self.end_to_end_seconds = Histogram(
            "motex_end_to_end_seconds",
            "Frame received by the service -> message published",
            buckets=_E2E_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "motex_queue_depth", "Items waiting for the analysis worker", registry=r
        )
        self.cpu_utilisation = Gauge(
            "motex_cpu_utilisation",
            "Busy seconds per wall second of the analysis worker over the last 10 s "
            "(near 1: no headroom left)",
            registry=r,
        )
        self.fits = Counter(
            "motex_fits",
            "Motif refits done (rate() gives refits per second)",
            ["model"],
            registry=r,
        )
        self.structure_changes = Counter(
            "motex_structure_changes",
            "Persistent changes of the set of keep atoms (see the message's change field)",
            ["model"],
            registry=r,
        )
        self.state_save_failures = Counter(
            "motex_state_save_failures",
            "Model state saves that failed (full disk, read-only mount: logged; the last good "
            "save stays in use)",
            ["model"],
            registry=r,
        )
        self.state_load_fallbacks = Counter(
            "motex_state_load_fallbacks",
            "Saved state generations refused at load (checksum or check failed) for the "
            "previous one",
            ["model"],
            registry=r,
        )
        self.fits_ahead = Counter(
            "motex_fits_ahead",
            "Refits of the next frame done beside this one ([service] fit_ahead), by outcome: "
            "started; used by their frame; dropped (the next frame analysed was another); "
            "redone (a rebuilt frame refits the whole catalogue); failed (fitted again in line)",
            ["model", "outcome"],
            registry=r,
        )
        self.model_mae = Gauge(
            "motex_model_mae",
            "GBDT mean absolute error on held-out refits",
            ["model"],
            registry=r,
        )
        self.last_frame_timestamp = Gauge(
            "motex_last_frame_timestamp_seconds",
            "Unix time the last frame arrived (0: none yet); alert on time() minus it",
            registry=r,
        )
        self.start_time = Gauge(
            "motex_start_time_seconds", "Unix time the service's metrics were created", registry=r
        )
        self._started_at = time.time()
        self.start_time.set(self._started_at)
        self.service_state = Gauge(
            "motex_service_state",
            "1 for the service's current state (preparing: models being prepared, no frame "
            "analysed yet; ready; stopping), 0 for the others",
            ["state"],
            registry=r,
        )
        self.model_state = Gauge(
            "motex_model_state",
            "1 for each model's current state (preparing; waiting: prepares on its first "
            "frame; ready), 0 for the others",
            ["model", "state"],
            registry=r,
        )
        self.preparation_progress = Gauge(
            "motex_preparation_progress",
            "Fraction of the models whose start-up preparation is done (ready, or waiting for "
            "their first frame): 0 to 1",
            registry=r,
        )
        self.preparation_seconds = Gauge(
            "motex_model_preparation_seconds",
            "Seconds the model's last preparation took, or has taken so far while it runs",
            ["model"],
            registry=r,
        )
        self._state_lock = threading.Lock()
        self._state: ServiceState = "preparing"
        self._models: dict[str, ModelState] = {}
        self._prep_started: dict[str, float] = {}
        self.set_state("preparing")

    def declare(
        self, models: Sequence[str], sources: Sequence[str], sinks: Sequence[str] = ()
    ) -> None:
        """Export every labelled counter at 0 for these models, sources and sinks.

        A backlog's place (``where``) is declared for every source and the service, and the
        stage histogram for the stages the analyzer reports. Counters labelled by something
        open-ended (a malformed-input kind) appear at their first increment.
        """
        for name in _PER_MODEL:
            for model in models:
                getattr(self, name).labels(model=model)
        for name in _PER_SOURCE:
            counter = getattr(self, name, None)  # some exist only with newer receivers
            for source in sources if counter is not None else ():
                counter.labels(source=source)
        for sink in sinks:
            self.sink_errors.labels(sink=sink)
        backlog = getattr(self, "backlog_full", None)
        for where in [*sources, "service"] if backlog is not None else ():
            backlog.labels(where=where)
        for stage in ANALYSIS_STAGES:
            self.stage_seconds.labels(stage=stage)

    def set_state(self, state: ServiceState) -> None:
        """Move the service to ``state`` (one of :data:`SERVICE_STATES`)."""
        if state not in SERVICE_STATES:
            raise ValueError(f"unknown service state {state!r}")
        with self._state_lock:
            self._state = state
            for name in SERVICE_STATES:
                self.service_state.labels(state=name).set(1 if name == state else 0)

    def set_model_state(self, model: str, state: ModelState, clock: bool = True) -> None:
        """Move ``model`` to ``state``; with ``clock``, preparing starts its preparation clock
        (``motex_model_preparation_seconds``) and leaving it stops the clock."""
        if state not in MODEL_STATES:
            raise ValueError(f"unknown model state {state!r}")
        with self._state_lock:
            self._models[model] = state
            for name in MODEL_STATES:
                self.model_state.labels(model=model, state=name).set(1 if name == state else 0)
            seconds = self.preparation_seconds.labels(model=model)
            if clock and state == "preparing" and model not in self._prep_started:
                started = self._prep_started[model] = time.monotonic()
                seconds.set_function(lambda: time.monotonic() - started)
            elif state != "preparing" and model in self._prep_started:
                took = time.monotonic() - self._prep_started.pop(model)
                seconds.set_function(lambda: took)
            done = sum(1 for v in self._models.values() if v != "preparing")
            self.preparation_progress.set(done / len(self._models))

    def declare_models(self, models: Iterable[str]) -> None:
        """Every model preparing (progress 0 of them) before the first one starts; each
        model's clock starts only when its own preparation does (they run in turn)."""
        for model in models:
            self.set_model_state(model, "preparing", clock=False)

    def health(self) -> dict[str, Any]:
        """What /healthz answers: the service state, each model's, and the progress."""
        with self._state_lock:
            models = dict(self._models)
            state = self._state
        done = sum(1 for v in models.values() if v != "preparing")
        return {
            "state": state,
            "models": models,
            "progress": done / len(models) if models else 1.0,
            "uptime_s": round(time.time() - self._started_at, 3),
        }

    def on_scrape(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` at every collection (each /metrics scrape), before counters are read.

        For counts kept outside the registry (a source's stats) that must be current at each
        scrape, not only when the next good frame arrives. A hook that raises is logged and
        skipped; it must be thread-safe (scrapes run on the HTTP server's threads).
        """
        self._scrape_hooks.hooks.append(hook)

    def frame_arrived(self, model: str, when: float | None = None) -> None:
        """Count a received frame and note when it came (called by receivers)."""
        self.last_frame_timestamp.set(time.time() if when is None else when)
        self.frames_received.labels(model=model).inc()


@dataclass
class MetricsServer:
    """A running /metrics HTTP server; ``close()`` frees its port."""

    server: WSGIServer
    thread: threading.Thread
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


class _ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    """One thread per request, so a slow scrape never blocks /healthz."""

    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    """No access log line per scrape (every 15 s, forever)."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _app(
    registry: CollectorRegistry, health: Callable[[], dict[str, Any]] | None
) -> Callable[..., Iterable[bytes]]:
    """/healthz (always 200 while the process answers: liveness), /readyz (200 once ready,
    else 503: readiness) and the metrics on every other path (as prometheus_client does)."""
    metrics_app = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path in ("/healthz", "/readyz"):
            body = health() if health is not None else {"state": "ready"}
            ready = body.get("state") == "ready"
            status = "200 OK" if path == "/healthz" or ready else "503 Service Unavailable"
            data = json.dumps(body).encode()
            start_response(
                status,
                [("Content-Type", "application/json"), ("Content-Length", str(len(data)))],
            )
            return [data]
        return metrics_app(environ, start_response)

    return app


def start_metrics_server(
    port: int,
    host: str = "127.0.0.1",
    registry: CollectorRegistry | None = None,
    health: Callable[[], dict[str, Any]] | None = None,
) -> MetricsServer:
    """Serve ``registry`` on ``http://host:port/metrics``; port 0 picks a free port.

    The host defaults to loopback: metrics reveal run uids and timings, so exposing them to the
    facility network is a deliberate choice (``metrics_host`` in the config). ``health``
    (e.g. :meth:`StreamMetrics.health`) answers /healthz and /readyz.
    """
    if registry is None:
        raise ValueError("pass the service's registry (StreamMetrics().registry)")

    class Server(_ThreadingServer):
        address_family = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0][0]

    server = make_server(host, port, _app(registry, health), Server, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True)
    thread.start()
    return MetricsServer(server, thread, host, int(server.server_port))
