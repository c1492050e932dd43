"""The dashboard screenshots in docs/ and the README, taken from the demo series.

The demo's two-motif series (α-Keggin unit → W13 cluster, :mod:`motex_stream.stream.sim.series`)
runs through the real service with the demo's settings; ``motex-stream dashboard`` (as
``serve_subscription``) follows its ZMQ stream and headless Chromium photographs the page
while frames arrive, at the end, scrolled back to the first frames, and zoomed in on the
3-D model. Run: ``.venv/bin/python benchmarks/dashboard_screenshots.py [--out docs/img]``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from motex_stream.analysis.settings import LiveModelSettings  # noqa: E402
from motex_stream.stream.dashboard import DashboardServer, serve_subscription  # noqa: E402
from motex_stream.stream.frames import Frame  # noqa: E402
from motex_stream.stream.live.analyzer import MotexFrameAnalyzer  # noqa: E402
from motex_stream.stream.publishers.zmq_pub import ZmqPublisher  # noqa: E402
from motex_stream.stream.service import StreamService  # noqa: E402
from motex_stream.stream.sim.series import two_motif_series  # noqa: E402
from motex_stream.stream.sources.memory_source import SeriesSource  # noqa: E402
from tests.stream.browser import chromium, wait_until  # noqa: E402

N_FRAMES = 24  # as `motex-stream demo`


def columns(driver) -> int:
    return driver.execute_script(
        "const h = document.querySelector('.heatmap'); return h && h.data ? h.data[0].x.length : 0"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="motex-shots-"))
    series = two_motif_series(work / "model", n_frames=N_FRAMES)
    settings = LiveModelSettings(
        name="two-motifs",
        starting_model=str(series.model_path),
        catalogue_size=4000,
        refit=4000,
        rounds=10,
        max_trees=150,
    )
    reference = Frame("reference", 1, 0.0, series.r, series.frame(0))
    analyzer = MotexFrameAnalyzer.prepare(settings, reference, work / "state")

    publisher = ZmqPublisher("tcp://127.0.0.1:0")
    stop = threading.Event()
    servers: list[DashboardServer] = []
    thread = threading.Thread(
        target=serve_subscription,
        args=(publisher.address,),
        kwargs={"port": 0, "stop_event": stop, "on_start": servers.append},
        daemon=True,
    )
    thread.start()
    assert publisher.wait_for_subscribers(1, timeout=10)
    source = SeriesSource(series.frame, series.r, N_FRAMES, interval=0.5)
    service = StreamService({analyzer.name: analyzer}, [source], [publisher])
    try:
        with chromium() as driver:
            driver.set_window_size(1400, 1500)
            driver.get(servers[0].url)
            service.start()
            wait_until(lambda: columns(driver) >= N_FRAMES // 2, 300, "half the series")
            time.sleep(0.5)
            driver.save_screenshot(str(args.out / "dashboard-live.png"))
            wait_until(lambda: columns(driver) >= N_FRAMES, 300, "the whole series")
            time.sleep(1.0)
            driver.save_screenshot(str(args.out / "dashboard-end.png"))
            driver.execute_script(
                """const s = document.querySelector('.frame-slider');
                   s.value = 2; s.dispatchEvent(new Event('input'));"""
            )
            time.sleep(1.5)  # the older fit curve is fetched on demand
            driver.save_screenshot(str(args.out / "dashboard-scrolled-back.png"))
            panel = driver.find_element("css selector", ".model3d")
            panel.screenshot(str(args.out / "dashboard-3d.png"))
    finally:
        service.stop()
        stop.set()
        thread.join(10)
    print("screenshots in", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
