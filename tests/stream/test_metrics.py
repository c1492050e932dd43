"""Metrics scraped over HTTP from the metrics server, the way Prometheus sees them."""

from __future__ import annotations

import threading
import time
import urllib.request
from collections.abc import Iterator

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from motex_stream.stream.frames import Frame, RunStart, RunStop, StreamItem
from motex_stream.stream.live.analyzer_protocol import FrameResult
from motex_stream.stream.metrics import StreamMetrics, start_metrics_server
from motex_stream.stream.service import StreamService
from motex_stream.stream.sources.base import FrameSource, SourceStats
from tests.stream.results import frame_result


class ConstantAnalyzer:
    """Protocol-exact analyzer returning fixed numbers, so metric values are predictable."""

    name = "const"

    @property
    def fit_r(self) -> np.ndarray:
        return np.linspace(2.0, 8.0, 10)

    def analyze(self, frame: Frame) -> FrameResult:
        if frame.seq == 3:
            raise RuntimeError("boom")
        return frame_result(
            model=self.name,
            contributions=[{"atom": 1, "element": "W", "value": -0.1, "spread": 0.0}],
            best={"mask": [1], "rwp": 0.2},
            timing={"fit": 0.02, "train": 0.01, "explain": 0.005},
            model_quality={"mae": 0.0125},
            n_refit=10,
        )


class Source(FrameSource):
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
    assert s[("motex_fits_total", model)] == 40  # 4 analysed frames x 10 refits
    assert s[("motex_stage_seconds_count", (("stage", "fit"),))] == 4
    assert s[("motex_stage_seconds_sum", (("stage", "train"),))] == pytest.approx(0.04)
    assert s[("motex_end_to_end_seconds_count", ())] == 4
    assert s[("motex_queue_depth", ())] == 0
    assert 0 < s[("motex_last_frame_timestamp_seconds", ())] <= time.time()
    assert s[("motex_start_time_seconds", ())] <= s[("motex_last_frame_timestamp_seconds", ())]


class GatedSource(FrameSource):
    """Yields a run start, then one frame per ``release()`` (a bad one first)."""

    name = "gated"

    def __init__(self) -> None:
        self.stats = SourceStats()
        self.gate = threading.Semaphore(0)

    def release(self) -> None:
        self.gate.release()

    def items(self, stop_event: threading.Event) -> Iterator[StreamItem]:
        r = np.linspace(1.0, 10.0, 50)
        yield RunStart("g-run", 0.0)
        for seq, g in ((1, np.full(50, np.nan)), (2, np.cos(r))):
            while not self.gate.acquire(timeout=0.05):
                if stop_event.is_set():
                    return
            yield Frame("g-run", seq, float(seq), r, g)
        yield RunStop("g-run", 3.0)


def test_failure_counters_exported_at_zero_before_the_first_frame(
    server_and_metrics: tuple[str, StreamMetrics], tmp_path
) -> None:
    """What the alerts need: every failure counter has a 0 sample from start-up, for each
    configured model, source and sink, and it moves when a bad frame comes."""
    from motex_stream.stream.publishers.jsonl import JsonlSink

    url, metrics = server_and_metrics
    source = GatedSource()
    service = StreamService(
        {"const": ConstantAnalyzer(), "other": ConstantAnalyzer()},
        [source],
        [JsonlSink(tmp_path / "out.jsonl")],
        metrics=metrics,
    )
    service.start()
    try:
        before = scrape(url)
        for model in ("const", "other"):
            for name in ("failed", "skipped", "received", "processed"):
                assert before[(f"motex_frames_{name}_total", (("model", model),))] == 0
            assert before[("motex_fits_total", (("model", model),))] == 0
        for name in ("motex_seq_gaps_total", "motex_source_orphans_total"):
            assert before[(name, (("source", "gated"),))] == 0
        assert before[("motex_sink_errors_total", (("sink", "JsonlSink"),))] == 0
        assert before[("motex_last_frame_timestamp_seconds", ())] == 0
        source.release()  # the NaN frame
        deadline = time.monotonic() + 10
        while service.summary()["failed"] < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        after = scrape(url)
        assert after[("motex_frames_failed_total", (("model", "const"),))] == 1
        assert after[("motex_frames_failed_total", (("model", "other"),))] == 0
        source.release()
        assert service.wait(10)
    finally:
        service.stop()
    assert scrape(url)[("motex_frames_processed_total", (("model", "const"),))] == 1


def test_registries_are_independent() -> None:
    a, b = StreamMetrics(), StreamMetrics()  # would raise "Duplicated timeseries" if shared
    a.frame_arrived("x")
    assert a.registry.get_sample_value("motex_frames_received_total", {"model": "x"}) == 1
    assert b.registry.get_sample_value("motex_frames_received_total", {"model": "x"}) is None
    with pytest.raises(ValueError, match="registry"):
        start_metrics_server(0)


def test_state_and_preparation_progress_over_http() -> None:
    """Issue 22 item 4: state, per-model state and progress, and /healthz, /readyz."""
    import json
    import urllib.error

    metrics = StreamMetrics()
    server = start_metrics_server(0, registry=metrics.registry, health=metrics.health)
    base = server.url.removesuffix("/metrics")

    def get(path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(base + path, timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    try:
        metrics.declare_models(["a", "b"])
        s = scrape(server.url)
        assert s[("motex_service_state", (("state", "preparing"),))] == 1
        assert s[("motex_preparation_progress", ())] == 0
        assert get("/readyz")[0] == 503
        status, body = get("/healthz")
        assert status == 200
        assert json.loads(body)["models"] == {"a": "preparing", "b": "preparing"}
        metrics.set_model_state("a", "preparing")
        time.sleep(0.05)
        metrics.set_model_state("a", "ready")
        metrics.set_model_state("b", "waiting")  # no reference: prepares on its first frame
        metrics.set_state("ready")
        s = scrape(server.url)
        assert s[("motex_preparation_progress", ())] == 1
        assert s[("motex_model_state", (("model", "b"), ("state", "waiting")))] == 1
        assert s[("motex_model_preparation_seconds", (("model", "a"),))] >= 0.05
        # b never prepared: its clock did not run while a prepared
        assert s[("motex_model_preparation_seconds", (("model", "b"),))] == 0
        assert get("/readyz")[0] == 200
        assert json.loads(get("/healthz")[1])["state"] == "ready"
        assert get("/metrics")[0] == 200 and get("/")[0] == 200  # metrics on any other path
    finally:
        server.close()
