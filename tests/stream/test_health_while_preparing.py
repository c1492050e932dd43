"""/healthz answers, reporting ``preparing``, while a model is still being prepared (issue 23).

``serve`` starts the metrics and health server before the heavy imports and the model
preparation, so a cold start (seconds to minutes) shows as ``preparing`` instead of a dead
target. This pins the order in process, without timing: the scrape is made over real HTTP
from inside the preparation itself, at the moment the analyzer reports that its model starts
preparing (and again once it is ready), so it cannot come too early or too late. How soon
after launch the first answer comes is measured by ``benchmarks/bench_startup.py``.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

from motex_stream.stream.commands.runner import build_service
from motex_stream.stream.config import Config
from motex_stream.stream.metrics import ModelState, StreamMetrics, start_metrics_server
from tests.conftest import KEGGIN


class AskingMetrics(StreamMetrics):
    """The service's metrics, asking the running health server at each model state."""

    url = ""

    def __init__(self) -> None:
        super().__init__()
        self.answers: list[tuple[str, int, dict[str, Any]]] = []

    def set_model_state(self, model: str, state: ModelState, clock: bool = True) -> None:
        super().set_model_state(model, state, clock)
        if self.url:
            with urllib.request.urlopen(self.url + "/healthz", timeout=30) as response:
                self.answers.append((state, response.status, json.loads(response.read())))


def test_healthz_answers_preparing_before_the_analyzer_is_ready(tmp_path: Path) -> None:
    config = Config.model_validate(
        {
            "service": {"state_dir": tmp_path / "state", "metrics_port": 0},
            "models": [
                {
                    "name": "keggin",
                    "starting_model": KEGGIN / "109725.xyz",
                    "reference": KEGGIN / "DanMAX_AlphaKeggin.gr",
                    "catalogue_size": 200,
                    "train_rows": 200,
                    "search_calls": 2,
                    "cv_folds": 2,
                    "ci_models": 0,
                    "confirm_contexts": 0,
                }
            ],
        }
    )
    metrics = AskingMetrics()  # the service's state is "preparing" from here
    server = start_metrics_server(0, "127.0.0.1", metrics.registry, health=metrics.health)
    metrics.url = f"http://{server.host}:{server.port}"
    try:
        service = build_service(config, metrics)  # prepares the model on its reference
        try:
            analyzer = service.analyzers["keggin"]
            assert analyzer.inner is not None  # type: ignore[attr-defined]  # prepared now
        finally:
            service.stop()
    finally:
        server.close()
    states = [(state, status, health["models"]) for state, status, health in metrics.answers]
    # while the model prepares: 200, the service and the model "preparing", progress 0
    first_state, first_status, first = metrics.answers[0]
    assert (first_state, first_status) == ("preparing", 200)
    assert first["state"] == "preparing" and first["models"] == {"keggin": "preparing"}
    assert first["progress"] == 0.0
    # and once it is ready, the same server says so
    assert states[-1] == ("ready", 200, {"keggin": "ready"})
    assert metrics.answers[-1][2]["progress"] == 1.0
