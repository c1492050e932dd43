"""`motex-stream demo`: a whole beamline on one machine, end to end, in about a minute.

An in-process Tiled server, a Bluesky RunEngine with a simulated PDF detector playing a time
series whose motif changes (α-Keggin → W13 cluster, see :mod:`motex_stream.stream.sim.series`),
the live service subscribed to Tiled, and the watch view on the service's ZMQ stream. At the
end: a summary, a heatmap of contribution values vs frame, and the results as JSON Lines.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import socket
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

# the page's default port, written once (the `dashboard` command takes it from there too)
from motex_stream.stream.dashboard.server import DEFAULT_PORT

if TYPE_CHECKING:
    from motex_stream.analysis.settings import LiveModelSettings
    from motex_stream.stream.config import Config

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=None, help="output folder (default: new folder)")
    p.add_argument("--frames", type=int, default=24, help="frames in the simulated series")
    p.add_argument("--delay", type=float, default=0.5, help="seconds between frames")
    p.add_argument("--catalogue", type=int, default=4000, help="motifs in the catalogue")
    p.add_argument(
        "--refit",
        type=int,
        default=None,
        help="motifs refitted per frame (default: the whole catalogue)",
    )
    p.add_argument("--no-watch", action="store_true", help="do not show the live view")
    p.add_argument(
        "--dashboard-port",
        type=int,
        default=DEFAULT_PORT,
        help="serve the live web page on 127.0.0.1:PORT while the demo runs (0: off)",
    )


def check_arguments(args: argparse.Namespace) -> None:
    """Refuse what cannot work before anything starts, one line each (ValueError)."""
    if args.frames < 2:
        raise ValueError(f"--frames must be at least 2 (a series), got {args.frames}")
    if not args.delay >= 0:
        raise ValueError(f"--delay must be >= 0 seconds, got {args.delay}")
    if args.catalogue < 10:
        raise ValueError(f"--catalogue must be at least 10 motifs, got {args.catalogue}")
    if args.refit is not None and not 1 <= args.refit <= args.catalogue:
        raise ValueError(
            f"--refit must be between 1 and --catalogue ({args.catalogue}), got {args.refit}"
        )


def run_from_args(args: argparse.Namespace) -> int:
    check_arguments(args)
    out = args.out or Path(f"motex-demo-{datetime.now():%Y%m%d-%H%M%S}")
    summary = run_demo(
        out,
        args.frames,
        args.delay,
        args.catalogue,
        args.refit,
        not args.no_watch,
        dashboard_port=args.dashboard_port or None,
    )
    print(summary["text"])
    return 0 if summary["ok"] else 1


def _start_watch(address: str, n_frames: int, show: bool) -> threading.Thread:
    from motex_stream.stream.commands.watch import watch

    def target() -> None:
        sink: Any = None if show else io.StringIO()
        watch(address, max_messages=n_frames, timeout=120.0, refresh=2.0, out=sink)

    thread = threading.Thread(target=target, name="watch", daemon=True)
    thread.start()
    return thread


def _dashboard_port(port: int) -> int:
    """``port`` on 127.0.0.1 if it is free, else a free one: a demo must not fail because
    another page (an earlier demo, a served dashboard) holds the default port."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run_demo(
    out: Path,
    n_frames: int = 24,
    delay: float = 0.5,
    catalogue: int = 4000,
    refit: int | None = None,
    show_watch: bool = True,
    dashboard_port: int | None = None,
) -> dict[str, Any]:
    """Run the simulated experiment through the live service; returns a summary dict.

    ``dashboard_port``: also serve the live web page there (a free port if it is taken).
    """
    from tiled.client import from_uri
    from tiled.server import SimpleTiledServer

    from motex_stream.analysis.settings import LiveModelSettings
    from motex_stream.stream.commands.runner import build_service, format_summary
    from motex_stream.stream.dashboard import DashboardSink
    from motex_stream.stream.publishers.jsonl import read_jsonl
    from motex_stream.stream.publishers.zmq_pub import ZmqPublisher
    from motex_stream.stream.sim.series import two_motif_series
    from motex_stream.stream.sim.simulate import make_pdf_detector, make_run_engine, run_series
    from motex_stream.stream.sources.tiled_source import TiledLiveSource, attach_tiled_writer

    out.mkdir(parents=True, exist_ok=True)
    series = two_motif_series(out / "model", n_frames=n_frames)
    reference = out / "model" / "reference_frame1.gr"
    np.savetxt(reference, np.c_[series.r, series.frame(0)], header="r G (frame 1 of the demo)")
    settings = LiveModelSettings(
        name="two-motifs",
        starting_model=str(series.model_path),
        catalogue_size=catalogue,
        refit=refit,
        rounds=10,
        max_trees=150,
        reference=reference,
    )
    server = SimpleTiledServer()
    results = out / "results.jsonl"
    if results.exists():
        results.unlink()
    previous_key = os.environ.get("MOTEX_TILED_API_KEY")
    try:
        os.environ["MOTEX_TILED_API_KEY"] = str(server.api_key)
        uri = str(server.uri).split("?", 1)[0]
        page = None if dashboard_port is None else _dashboard_port(dashboard_port)
        config = demo_config(out, settings, uri, dashboard_port=page)
        t0 = time.perf_counter()
        print(f"preparing the model ({catalogue} motifs: catalogue fit + hyperparameter search)...")
        service = build_service(config)
        print(f"  prepared in {time.perf_counter() - t0:.1f} s")
        source, publisher = service.sources[0], service.sinks[1]
        assert isinstance(source, TiledLiveSource) and isinstance(publisher, ZmqPublisher)
        if page is not None:
            dashboard = service.sinks[-1]
            assert isinstance(dashboard, DashboardSink)
            print(
                f"dashboard: {dashboard.server.url} (open it now; it stops with the demo)",
                flush=True,
            )
        service.start()
        if not source.ready.wait(60):
            raise RuntimeError("the Tiled live subscription did not connect within 60 s")
        watcher = _start_watch(publisher.address, n_frames, show_watch)
        publisher.wait_for_subscribers(1, timeout=10)

        RE = make_run_engine()
        attach_tiled_writer(RE, from_uri(str(server.uri)))
        detector = make_pdf_detector(series.frame, series.r)
        print(f"RunEngine: {n_frames} frames, {delay} s apart → Tiled → service → ZMQ → watch")
        uid = run_series(RE, detector, n_frames, delay, md={"motex_model": settings.name})
        deadline = time.monotonic() + 120
        while service.summary()["processed"] + service.summary()["failed"] < n_frames:
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
        service.stop()
        watcher.join(timeout=5)
        stats = service.summary()
    finally:
        server.close()
        # the demo's key must not outlive its server (a caller's own key comes back)
        if previous_key is None:
            os.environ.pop("MOTEX_TILED_API_KEY", None)
        else:
            os.environ["MOTEX_TILED_API_KEY"] = previous_key

    messages = list(read_jsonl(results))
    return _summarise(out, series, messages, stats, uid, format_summary(stats))


def demo_config(
    out: Path, settings: LiveModelSettings, uri: str, dashboard_port: int | None = None
) -> Config:
    """The demo as the service config ``serve`` would read: the one model, the in-process
    Tiled server as a live source, the results file and a ZMQ stream on a free port for the
    watch view (what demo differs in is said here as config values: state under ``out``, no
    metrics server, the page on ``dashboard_port`` if given). Source and sinks carry the
    names the demo has always logged."""
    from motex_stream.stream.config import Config

    service = {"state_dir": out / "state", "metrics_port": 0, "dashboard_port": dashboard_port or 0}
    return Config.model_validate(
        {
            "service": service,
            "models": [settings],
            "sources": [{"type": "tiled", "name": f"tiled:{uri}", "uri": uri}],
            "sinks": [
                {"type": "jsonl", "name": "JsonlSink", "path": out / "results.jsonl"},
                {"type": "zmq", "name": "ZmqPublisher", "bind": "tcp://127.0.0.1:0"},
            ],
        }
    )


def _summarise(
    out: Path, series: Any, messages: list[dict[str, Any]], stats: dict, uid: str, line: str
) -> dict[str, Any]:
    from motex_stream.stream.sim.plots import contribution_heatmap

    n_a = len(series.motif_a)
    values = np.array([[c["value"] for c in m["contributions"]] for m in messages])
    png = contribution_heatmap(messages, out / "contributions_heatmap.png", boundary=n_a)
    top = np.argsort(values, axis=1)[:, :n_a]
    a_share = (top < n_a).mean(axis=1)
    crossover = int(np.argmax(a_share < 0.5)) + 1 if np.any(a_share < 0.5) else None
    ok = len(messages) > 0 and a_share[0] == 1.0 and a_share[-1] == 0.0
    text = "\n".join(
        [
            f"run {uid}: {line}",
            f"frames analysed: {len(messages)}; motif A (α-Keggin, atoms 1-{n_a}) → "
            f"motif B (W13, atoms {n_a + 1}-{values.shape[1] if len(values) else '?'})",
            f"first frame: {a_share[0] * 100:.0f} % of the {n_a} most negative atoms are A's"
            if len(values)
            else "no frames analysed",
            f"last frame:  {a_share[-1] * 100:.0f} % are A's" if len(values) else "",
            f"crossover at frame {crossover} of {len(messages)}" if crossover else "no crossover",
            f"heatmap: {png}",
            f"results: {out / 'results.jsonl'}",
            "demo " + ("OK" if ok else "did NOT show the expected motif change"),
        ]
    )
    return {"ok": ok, "text": text, "crossover": crossover, "stats": stats}
