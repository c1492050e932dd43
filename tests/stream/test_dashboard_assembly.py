"""The service's own dashboard is part of the one assembly (issue 24 step 3).

Before, ``serve`` and ``demo`` appended a ``DashboardSink`` to ``service.sinks`` after
``build_service`` had run, so the metrics never declared its error series (the alert had no
``sink="dashboard"`` sample at 0 until its first failure) and the demo built it its own way.
Now ``build_service`` makes it from ``service.dashboard_port``, as the last sink; it is
started before the models prepare (its page answers meanwhile) and closed if the assembly
fails. The models here are never prepared (no reference, no state), so nothing slow runs.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from motex_stream.analysis.settings import LiveModelSettings
from motex_stream.stream.commands import demo
from motex_stream.stream.commands.runner import build_service
from motex_stream.stream.config import Config
from motex_stream.stream.dashboard import DashboardSink
from motex_stream.stream.metrics import StreamMetrics
from tests.conftest import KEGGIN
from tests.stream.conftest import free_port

XYZ = str(KEGGIN / "109725.xyz")


def _config(tmp_path: Path, dashboard_port: int, **sink: object) -> Config:
    return Config.model_validate(
        {
            "service": {
                "state_dir": tmp_path / "state",
                "metrics_port": 0,
                "dashboard_port": dashboard_port,
            },
            "models": [{"name": "k", "starting_model": XYZ}],
            "sinks": [{"type": "jsonl", "name": "log", "path": tmp_path / "o.jsonl", **sink}],
        }
    )


def _snapshot(sink: DashboardSink) -> dict:
    with urllib.request.urlopen(sink.server.url + "api/snapshot", timeout=10) as response:
        return json.loads(response.read())


def test_build_service_makes_the_dashboard_its_last_sink_with_its_series_declared(
    tmp_path: Path,
) -> None:
    port = free_port()
    metrics = StreamMetrics()
    service = build_service(_config(tmp_path, port), metrics)
    try:
        names = [s.name for s in service.sinks]
        assert names == ["log", "dashboard"]
        dashboard = service.sinks[-1]
        assert isinstance(dashboard, DashboardSink)
        assert (dashboard.server.host, dashboard.server.port) == ("127.0.0.1", port)
        assert _snapshot(dashboard)["source"] == "this service"
        # declared with the others: a 0 sample from the first scrape
        sample = metrics.registry.get_sample_value
        assert sample("motex_sink_errors_total", {"sink": "dashboard"}) == 0
    finally:
        service.stop()
    DashboardSink(port=port).close()  # stopping the service closed the page: its port is free


def test_no_dashboard_unless_configured(tmp_path: Path) -> None:
    service = build_service(_config(tmp_path, 0))
    try:
        assert [s.name for s in service.sinks] == ["log"]
    finally:
        service.stop()


def test_a_failed_assembly_closes_the_dashboard_it_started(tmp_path: Path) -> None:
    port = free_port()
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the sink wants a folder")
    with pytest.raises(OSError):
        build_service(_config(tmp_path, port, path=blocker / "o.jsonl"))
    # the page's port is free again: a second dashboard can bind it
    again = DashboardSink(port=port)
    again.close()


def test_the_demo_says_its_page_as_config(tmp_path: Path) -> None:
    settings = LiveModelSettings(name="two-motifs", starting_model=XYZ, catalogue_size=100)
    uri = "http://127.0.0.1:8000/api"
    assert demo.demo_config(tmp_path, settings, uri).service.dashboard_port == 0
    port = free_port()
    assert demo.demo_config(tmp_path, settings, uri, port).service.dashboard_port == port
