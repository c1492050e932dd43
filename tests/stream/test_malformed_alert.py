"""A detector that starts to emit NaN frames raises an alert (issue 22 item 2, issue 19 item 7).

End to end with stock parts: bluesky's 0MQ ``Publisher`` sends a run whose events carry NaN
G through a real ``bluesky-0MQ-proxy`` to a running service; /metrics is scraped over real
HTTP; the scraped series are replayed into ``promtool test rules`` against the shipped
``deploy/prometheus/alerts.yml``, which must fire ``MotexMalformedInput``.

Before: the NaN frames were counted by the source but reached /metrics only when the next good
document arrived (a flood of garbage on an idle or broken detector was invisible), and no
alert rule watched malformed input at all.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from motex_stream.stream.frames import Frame
from motex_stream.stream.live.analyzer_protocol import FrameResult
from motex_stream.stream.metrics import StreamMetrics, start_metrics_server
from motex_stream.stream.service import StreamService
from motex_stream.stream.sources.zmq_source import ZmqSource, make_publisher
from tests.stream.conftest import R_GRID

ALERTS = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "alerts.yml"
SOURCE = "detector"
N_NAN = 5


class NeverCalledAnalyzer:
    """No frame of this test is valid, so the analysis must never run."""

    name = "k"

    @property
    def fit_r(self) -> np.ndarray:
        return R_GRID

    def analyze(self, frame: Frame) -> FrameResult:
        raise AssertionError(f"a NaN frame reached the analysis: {frame.seq}")


def malformed_total(url: str) -> float:
    """``motex_source_malformed_total{source="detector"}`` as Prometheus scrapes it."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "motex_source_malformed_total" and s.labels == {"source": SOURCE}:
                return float(s.value)
    raise AssertionError("motex_source_malformed_total{source=detector} is not exported")


@pytest.fixture
def service_url(zmq_proxy) -> Iterator[tuple[str, StreamService]]:  # type: ignore[no-untyped-def]
    source = ZmqSource(zmq_proxy.outbound, name=SOURCE)
    service = StreamService({"k": NeverCalledAnalyzer()}, [source], [], metrics=StreamMetrics())
    server = start_metrics_server(0, registry=service.metrics.registry)
    service.start()
    try:
        yield server.url, service
    finally:
        service.stop()
        server.close()


def _send_nan_run(zmq_address: str, service: StreamService) -> None:
    """A run (start, descriptor, then NaN events and no stop): a detector gone bad mid-run."""
    publisher = make_publisher(zmq_address)
    try:
        run = ""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # beat the 0MQ slow joiner with throwaway starts
            run = str(uuid.uuid4())
            publisher("start", {"uid": run, "time": time.time()})
            time.sleep(0.3)
            if run in service.summary()["runs"]:
                break
        else:
            raise AssertionError("the service never saw a start document")
        desc = str(uuid.uuid4())
        publisher(
            "descriptor",
            {
                "uid": desc,
                "run_start": run,
                "time": time.time(),
                "name": "primary",
                "data_keys": {"pdf_gr": {"dtype": "array", "shape": [len(R_GRID)], "source": "x"}},
                "configuration": {"pdf": {"data": {"pdf_r": R_GRID.tolist()}}},
            },
        )
        for seq in range(1, N_NAN + 1):
            g = np.full(len(R_GRID), np.nan)
            publisher(
                "event",
                {
                    "uid": str(uuid.uuid4()),
                    "descriptor": desc,
                    "seq_num": seq,
                    "time": time.time(),
                    "data": {"pdf_gr": g},
                    "timestamps": {"pdf_gr": time.time()},
                },
            )
    finally:
        publisher.close()


def _annotations(value: float) -> dict[str, str]:
    """The shipped rule's annotations, filled in as Prometheus fills them for this source."""
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    (rule,) = [r for g in groups for r in g["rules"] if r.get("alert") == "MotexMalformedInput"]
    return {
        key: text.replace("{{ $labels.source }}", SOURCE).replace("{{ $value }}", f"{value:g}")
        for key, text in rule["annotations"].items()
    }


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("MOTEX_REQUIRE_PROMTOOL"):
            pytest.fail("promtool is required here (MOTEX_REQUIRE_PROMTOOL) but not on PATH")
        pytest.skip("promtool not installed (apt-get install prometheus)")
    return found


def test_nan_frames_reach_metrics_without_a_good_document(
    zmq_proxy,  # type: ignore[no-untyped-def]
    service_url: tuple[str, StreamService],
) -> None:
    url, service = service_url
    assert malformed_total(url) == 0
    _send_nan_run(zmq_proxy.inbound, service)
    deadline = time.monotonic() + 20
    seen = malformed_total(url)
    while seen < N_NAN and time.monotonic() < deadline:
        time.sleep(0.2)
        seen = malformed_total(url)
    # no document after the NaN events: the count is read from the source at scrape time
    assert seen == N_NAN
    assert service.summary()["received"] == 0 and service.summary()["failed"] == 0


def test_nan_frames_fire_the_malformed_input_alert(
    zmq_proxy,  # type: ignore[no-untyped-def]
    service_url: tuple[str, StreamService],
    tmp_path: Path,
) -> None:
    """The scraped counter, before and after the NaN frames, fires the shipped rule."""
    promtool = _promtool()
    url, service = service_url
    before = malformed_total(url)
    _send_nan_run(zmq_proxy.inbound, service)
    deadline = time.monotonic() + 20
    after = malformed_total(url)
    while after < N_NAN and time.monotonic() < deadline:
        time.sleep(0.2)
        after = malformed_total(url)
    assert (before, after) == (0, N_NAN)
    # one scrape a minute: quiet for 3 minutes, then the detector emits NaN frames
    values = " ".join(f"{v:g}" for v in [before] * 3 + [after] * 5)
    series = f'motex_source_malformed_total{{job="motex-stream", source="{SOURCE}"}}'
    case = {
        "rule_files": [str(ALERTS)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": series, "values": values}],
                "alert_rule_test": [
                    {"eval_time": "2m", "alertname": "MotexMalformedInput", "exp_alerts": []},
                    {
                        "eval_time": "5m",
                        "alertname": "MotexMalformedInput",
                        "exp_alerts": [
                            {
                                "exp_labels": {"severity": "warning", "source": SOURCE},
                                "exp_annotations": _annotations(after),
                            }
                        ],
                    },
                ],
            }
        ],
    }
    test_file = tmp_path / "nan_alert_test.yml"
    test_file.write_text(yaml.safe_dump(case))
    result = subprocess.run(
        [promtool, "test", "rules", str(test_file)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_scrape_hooks_run_before_counters_are_read() -> None:
    """A hook registered on the metrics runs at every collection, and a failing hook does
    not break the scrape."""
    metrics = StreamMetrics()
    calls: list[int] = []
    lock = threading.Lock()

    def hook() -> None:
        with lock:
            calls.append(1)
        metrics.seq_gaps.labels(source="s").inc()

    def broken() -> None:
        raise RuntimeError("boom")

    metrics.on_scrape(broken)
    metrics.on_scrape(hook)
    assert metrics.registry.get_sample_value("motex_seq_gaps_total", {"source": "s"}) == 1
    assert metrics.registry.get_sample_value("motex_seq_gaps_total", {"source": "s"}) == 2
    assert len(calls) == 2
