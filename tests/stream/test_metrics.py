"""Metrics scraped over HTTP from the metrics server, the way Prometheus sees them."""

from __future__ import annotations

import threading
import time
import urllib.request
from collections.abc import Iterator

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from motex_stream.stream.analyzer_protocol import FrameResult
from motex_stream.stream.frames import Frame, RunStart, RunStop, StreamItem
from motex_stream.stream.metrics import StreamMetrics, start_metrics_server
from motex_stream.stream.service import StreamService
from motex_stream.stream.sources.base import SourceStats


class ConstantAnalyzer:
    """Protocol-exact analyzer returning fixed numbers, so metric values are predictable."""

    name = "const"

    @property
    def fit_r(self) -> np.ndarray:
        return np.linspace(2.0, 8.0, 10)

    def analyze(self, frame: Frame) -> FrameResult:
        if frame.seq == 3:
            raise RuntimeError("boom")
        return FrameResult(
            model=self.name,
            contributions=[{"atom": 1, "element": "W", "value": -0.1, "spread": 0.0}],
            best={"mask": [1], "rwp": 0.2},
            timing={"fit": 0.02, "train": 0.01, "explain": 0.005},
            model_quality={"mae": 0.0125},
            n_refit=10,
        )


class Source:
    name = "fixed"

    def __init__(self) -> None:
        self.stats = SourceStats()

    def items(self, stop_event: threading.Event) -> Iterator[StreamItem]:
        r = np.linspace(1.0, 10.0, 50)
        yield RunStart("m-run", 0.0)
        for seq in range(1, 6):
            if seq == 5:
                self.stats.add("gaps")
            yield Frame("m-run", seq, float(seq), r, np.cos(r))
        yield RunStop("m-run", 6.0)


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.status == 200
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


@pytest.fixture
def server_and_metrics() -> Iterator[tuple[str, StreamMetrics]]:
    metrics = StreamMetrics()
    server = start_metrics_server(0, registry=metrics.registry)
    try:
        yield server.url, metrics
    finally:
        server.close()


def test_service_metrics_over_http(server_and_metrics: tuple[str, StreamMetrics]) -> None:
    url, metrics = server_and_metrics
    assert url.startswith("http://127.0.0.1:")
    StreamService({"const": ConstantAnalyzer()}, [Source()], [], metrics=metrics).run()
    s = scrape(url)
    model = (("model", "const"),)
    assert s[("motex_frames_received_total", model)] == 5
    assert s[("motex_frames_processed_total", model)] == 4
    assert s[("motex_frames_failed_total", model)] == 1
    assert s.get(("motex_frames_skipped_total", model), 0) == 0
    assert s[("motex_seq_gaps_total", (("source", "fixed"),))] == 1
    assert s[("motex_model_mae", model)] == 0.0125
    assert s[("motex_fits_per_second", model)] > 0
    assert s[("motex_stage_seconds_count", (("stage", "fit"),))] == 4
    assert s[("motex_stage_seconds_sum", (("stage", "train"),))] == pytest.approx(0.04)
    assert s[("motex_end_to_end_seconds_count", ())] == 4
    assert s[("motex_queue_depth", ())] == 0
    first = s[("motex_seconds_since_last_frame", ())]
    time.sleep(0.3)
    assert scrape(url)[("motex_seconds_since_last_frame", ())] >= first + 0.25  # live value


def test_registries_are_independent() -> None:
    a, b = StreamMetrics(), StreamMetrics()  # would raise "Duplicated timeseries" if shared
    a.frame_arrived("x")
    assert a.registry.get_sample_value("motex_frames_received_total", {"model": "x"}) == 1
    assert b.registry.get_sample_value("motex_frames_received_total", {"model": "x"}) is None
    with pytest.raises(ValueError, match="registry"):
        start_metrics_server(0)
