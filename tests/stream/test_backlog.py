"""A burst of large frames: the policy-``all`` backlog stays bounded in frames and bytes, the
latency reported is the frame's own (event time → published), hitting the bound is counted,
and memory goes back to its baseline afterwards. Under ``latest`` every skip is counted.

(Before: a 600-frame burst was reported with a 2.7 s latency while the true event → publish
time was 21 s, and 300 frames of 1.6 MB took RSS from 449 to 1,027 MB, where it stayed.)
"""

from __future__ import annotations

import gc
import os
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest

from motex_stream.stream.analyzer_protocol import FrameResult
from motex_stream.stream.frames import Frame, RunStart, RunStop, StreamItem
from motex_stream.stream.metrics import StreamMetrics
from motex_stream.stream.service import StreamService
from motex_stream.stream.sources.base import SourceStats

N_POINTS = 65_536  # 0.5 MB of G plus 0.5 MB of r per frame
BURST = 120
QUEUE_BYTES = 16 * 2**20


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class SlowAnalyzer:
    """Takes ``delay`` s per frame (stands in for the seconds-long ML-MotEx analysis)."""

    name = "slow"

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.fit_r = np.linspace(1.0, 20.0, 50)

    def analyze(self, frame: Frame) -> FrameResult:
        time.sleep(self.delay)
        return FrameResult(
            model=self.name,
            contributions=[{"atom": 1, "element": "W", "value": float(frame.g[0]), "spread": 0}],
            best={"mask": [1], "rwp": 0.5},
            timing={"fit": self.delay},
            model_quality={},
            n_refit=1,
        )


class BurstSource:
    """A run whose frames were all measured at once (event times 1 ms apart, now)."""

    def __init__(self, n: int, name: str = "burst") -> None:
        self.n = n
        self.name = name
        self.stats = SourceStats()

    def items(self, stop_event: threading.Event) -> Iterator[StreamItem]:
        t0 = time.time()
        yield RunStart(self.name, t0)
        for i in range(1, self.n + 1):
            r = np.linspace(1.0, 20.0, N_POINTS)
            g = np.sin(r) * (i + 1)  # a fresh frame each time, as a receiver would build it
            yield Frame(self.name, i, t0 + i * 1e-3, r, g)
        yield RunStop(self.name, time.time())


def run_burst(policy: str, n: int, delay: float) -> tuple[dict, StreamMetrics]:
    metrics = StreamMetrics()
    service = StreamService(
        {"slow": SlowAnalyzer(delay)},
        [BurstSource(n)],
        [],
        policy=policy,  # type: ignore[arg-type]
        queue_size=64,
        queue_bytes=QUEUE_BYTES,
        metrics=metrics,
    )
    peak = 0.0

    def watch() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, service._queue.nbytes)
            time.sleep(0.005)

    done = threading.Event()
    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        summary = service.run()
    finally:
        done.set()
        watcher.join()
    summary["peak_backlog_bytes"] = peak
    return summary, metrics


def test_burst_under_all_is_bounded_reports_true_latency_and_frees_memory() -> None:
    run_burst("all", 10, 0.0)  # warm up allocator and imports
    gc.collect()
    baseline = rss_mb()
    summary, metrics = run_burst("all", BURST, 0.01)
    gc.collect()
    after = rss_mb()
    frame_bytes = 2 * N_POINTS * 8
    assert summary["processed"] == BURST and summary["skipped"] == 0
    assert summary["peak_backlog_bytes"] <= QUEUE_BYTES + frame_bytes
    assert summary["backlog_full"] >= 1
    assert metrics.registry.get_sample_value("motex_backlog_full_total", {"where": "service"}) >= 1
    # the frames were all measured at the start: the last waited for the whole burst, and the
    # reported age says so, while receipt → publish stays short (bounded queue)
    assert summary["age_s"]["max"] >= BURST * 0.01 * 0.9
    assert summary["age_s"]["max"] > 2 * summary["latency_s"]["p50"]
    assert metrics.registry.get_sample_value("motex_frame_age_seconds_count") == BURST
    assert after <= baseline * 1.10 + 5, f"RSS {baseline:.0f} MB → {after:.0f} MB after the burst"


def test_burst_under_latest_counts_every_skip() -> None:
    summary, metrics = run_burst("latest", 60, 0.01)
    assert summary["received"] == 60
    assert summary["processed"] + summary["skipped"] == 60
    assert summary["skipped"] > 0
    assert metrics.registry.get_sample_value(
        "motex_frames_skipped_total", {"model": "slow"}
    ) == pytest.approx(summary["skipped"])
