"""Dashboard timing in a real browser: page load to first render, and frame to screen.

Setup: a ZMQ publisher sends v1 messages the size of a 50-permutable-atom model (200 atoms
in the structure, a 500-point fit curve); ``serve_subscription`` (what ``motex-stream
dashboard`` runs) serves the page; headless Chromium (Debian's, via Selenium) loads it.

- *Page load to first render*, in ms since navigation start, with a run history of H frames
  already on the server: *first data* when the header and ranked atoms show values
  (``stats.firstData``; they do not wait for Plotly), *all plots* when every plot is drawn
  (``stats.firstRender``), first in a fresh browser profile (nothing cached: plotly.js, 4.6 MB,
  is fetched and compiled), then after a reload of the page in the same browser.
- *Frame to screen*: from ``published_at`` (set by the publisher as it sends) to the end of
  the redraw that shows the frame, on the browser's clock corrected by the server's (same
  machine); frames sent at 4 Hz on top of H frames of history.

Targets (issue 10): first render ≤ 1 s, frame to screen ≤ 200 ms.
Run: ``.venv/bin/python benchmarks/bench_dashboard.py [--history 200 2000] [--frames 40]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from motex_stream.stream.frames import Frame  # noqa: E402
from motex_stream.stream.messages import build_message  # noqa: E402
from tests.stream.browser import chromium, wait_until  # noqa: E402
from tests.stream.dashboard_feed import publish, published_dashboard  # noqa: E402
from tests.stream.results import frame_result  # noqa: E402

N_ATOMS, N_PERM, N_FIT = 200, 50, 500
rng = np.random.default_rng(0)
XYZ = rng.normal(scale=4.0, size=(N_ATOMS, 3))
R = np.linspace(1.5, 20.0, N_FIT)


def message(seq: int, source: str, with_structure: bool) -> dict:
    values = rng.normal(scale=0.05, size=N_PERM)
    g = np.sin(2 * R) * np.exp(-0.1 * R)
    result = frame_result(
        model="bench",
        contributions=[
            {"atom": a + 1, "element": "W", "value": float(v), "spread": 0.005}
            for a, v in enumerate(values)
        ],
        best={"mask": (values < 0).astype(int).tolist(), "rwp": 0.2, "scale": 1.0, "zoom": 1.0},
        timing={"fit": 0.1},
        model_quality={"mae": 0.004, "n_trees": 60.0, "rebuilt": 0.0},
        n_refit=10000,
        fit={"r": R.tolist(), "g": g.tolist(), "g_calc": (0.9 * g).tolist()},
        structure={
            "elements": ["W"] * N_PERM + ["O"] * (N_ATOMS - N_PERM),
            "xyz": XYZ.tolist(),
            "permutable": list(range(1, N_PERM + 1)),
            "bonded": [[a + 1] for a in range(N_PERM)] + [[1]] * (N_ATOMS - N_PERM),
        }
        if with_structure
        else None,
    )
    now = time.time()
    return build_message(
        result, Frame(source, seq, now, R, R), received_at=now - 0.5, published_at=now
    )


def measure(history: int, frames: int, rate: float) -> dict[str, float]:
    with published_dashboard() as (publisher, dashboard):
        source = f"bench-{history}"
        publish(publisher, (message(seq, source, seq == 1) for seq in range(1, history + 1)))
        server = dashboard.server
        assert server is not None
        wait_until(lambda: server.state.messages == history, 60, "the history")
        with chromium() as driver:
            driver.get(server.url)
            first = wait_until(
                lambda: driver.execute_script("return window.motex.stats.firstRender"),
                30,
                "the first render",
            )
            first_data = driver.execute_script("return window.motex.stats.firstData")
            plotly_ready = driver.execute_script("return window.motex.stats.plotlyReady")
            first_plots = driver.execute_script("return window.motex.stats.firstPlots")
            driver.refresh()  # the same browser again: plotly.js now in its cache
            warm = wait_until(
                lambda: driver.execute_script("return window.motex.stats.firstRender"),
                30,
                "the first render after a reload",
            )
            new = (message(history + 1 + k, source, False) for k in range(frames))
            publish(publisher, new, every=1.0 / rate)
            wait_until(
                lambda: driver.execute_script(
                    "return window.motex.stats.latency.length >= arguments[0]", frames
                ),
                30,
                "every frame on screen",
            )
            lat = np.array(driver.execute_script("return window.motex.stats.latency")) * 1000
    return {
        "history": history,
        "first_data_ms": float(first_data),
        "plotly_ready_ms": float(plotly_ready),
        "first_plots_ms": float(first_plots),
        "first_render_ms": float(first),
        "warm_render_ms": float(warm),
        "p50_ms": float(np.percentile(lat, 50)),
        "p95_ms": float(np.percentile(lat, 95)),
        "max_ms": float(lat.max()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--history", type=int, nargs="+", default=[1, 200, 2000])
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--rate", type=float, default=4.0, help="frames per second sent")
    args = parser.parse_args(argv)
    print(
        f"{'history':>8} {'first data':>11} {'plotly.js':>10} {'2-D plots':>10} "
        f"{'all plots':>10} {'reloaded':>9} {'frame→screen p50':>17} {'p95':>8} {'max':>8}"
    )
    ok = True
    for history in args.history:
        r = measure(history, args.frames, args.rate)
        print(
            f"{r['history']:>8} {r['first_data_ms']:>8.0f} ms {r['plotly_ready_ms']:>7.0f} ms "
            f"{r['first_plots_ms']:>7.0f} ms {r['first_render_ms']:>7.0f} ms "
            f"{r['warm_render_ms']:>6.0f} ms "
            f"{r['p50_ms']:>14.0f} ms "
            f"{r['p95_ms']:>5.0f} ms {r['max_ms']:>5.0f} ms",
            flush=True,
        )
        ok &= r["warm_render_ms"] <= 1000 and r["p95_ms"] <= 200
    print(
        "targets (all plots after a reload ≤ 1000 ms, p95 frame→screen ≤ 200 ms):",
        "met" if ok else "MISSED",
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
