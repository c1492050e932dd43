"""A burst of large frames through the service: backlog, true latency and memory, both policies.

The issue's scale by default: 300 frames of 1.6 MB (r and G of 100,000 points) measured at
once, analysed at ``--delay`` s per frame. Under policy ``all`` the queue holds at most
``--queue-mb``; the frame age (event time -> published) shows the wait the beamline sees, and
RSS is printed before, at the peak and after the burst (the service trims the heap once a large
backlog has drained). Under ``latest`` every frame is received, and processed + skipped adds up.
Usage: python benchmarks/bench_burst.py [--frames 300] [--points 100000] [--delay 0.01]
"""

from __future__ import annotations

import argparse
import gc
import os
import threading
import time
from collections.abc import Iterator

import numpy as np

from motex_stream.stream.frames import Frame, RunStart, RunStop, StreamItem
from motex_stream.stream.live.analyzer_protocol import AtomValues, BestFit, FrameResult
from motex_stream.stream.service import StreamService
from motex_stream.stream.sources.base import FrameSource, SourceStats


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class Slow:
    name = "slow"

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.fit_r = np.linspace(1.0, 20.0, 50)

    def analyze(self, frame: Frame) -> FrameResult:
        time.sleep(self.delay)
        return FrameResult(
            model=self.name,
            contributions=AtomValues(
                atom=[1], element=["W"], value=[float(frame.g[0])], spread=[0.0]
            ),
            best=BestFit(mask=[1], rwp=0.5),
            timing={"fit": self.delay},
            n_refit=1,
        )


class Burst(FrameSource):
    def __init__(self, n: int, points: int) -> None:
        self.name, self.n, self.points, self.stats = "burst", n, points, SourceStats()

    def items(self, stop_event: threading.Event) -> Iterator[StreamItem]:
        t0 = time.time()
        yield RunStart(self.name, t0)
        for i in range(1, self.n + 1):
            r = np.linspace(1.0, 20.0, self.points)
            yield Frame(self.name, i, t0 + i * 1e-3, r, np.sin(r) * i)
        yield RunStop(self.name, time.time())


def burst(policy: str, args: argparse.Namespace) -> None:
    gc.collect()
    base = rss_mb()
    service = StreamService(
        {"slow": Slow(args.delay)},
        [Burst(args.frames, args.points)],
        [],
        policy=policy,  # type: ignore[arg-type]
        queue_bytes=int(args.queue_mb * 2**20),
    )
    peak_rss = peak_backlog = 0.0
    done = threading.Event()

    def watch() -> None:
        nonlocal peak_rss, peak_backlog
        while not done.is_set():
            peak_rss = max(peak_rss, rss_mb())
            peak_backlog = max(peak_backlog, service._queue.nbytes / 2**20)
            time.sleep(0.01)

    watcher = threading.Thread(target=watch)
    watcher.start()
    t = time.perf_counter()
    s = service.run()
    wall = time.perf_counter() - t
    done.set()
    watcher.join()
    gc.collect()
    after = rss_mb()
    age, lat = s["age_s"], s["latency_s"]
    print(
        f"{policy:>6}: {s['received']} received, {s['processed']} processed, "
        f"{s['skipped']} skipped in {wall:.1f} s; backlog peak {peak_backlog:.0f} MB "
        f"(bound {args.queue_mb:.0f} MB), bound hit {s['backlog_full']}x; "
        f"age max {age.get('max', 0):.2f} s vs receipt->publish p50 {lat.get('p50', 0):.3f} s; "
        f"RSS {base:.0f} -> peak {peak_rss:.0f} -> after {after:.0f} MB"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=300)
    p.add_argument("--points", type=int, default=100_000)
    p.add_argument("--delay", type=float, default=0.01)
    p.add_argument("--queue-mb", type=float, default=64.0)
    args = p.parse_args()
    mb = 2 * args.points * 8 / 2**20
    print(
        f"burst of {args.frames} frames of {mb:.1f} MB, analysis {args.delay * 1000:.0f} ms/frame"
    )
    burst("all", args)
    burst("latest", args)


if __name__ == "__main__":
    main()
