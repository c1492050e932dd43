"""Sinks carry configured names into their metric labels (issue 22 item 5).

Before: ``motex_sink_errors_total`` was labelled with the Python class name
(``sink="JsonlSink"``), so two sinks of one type shared one series and an operator could not
tell which output failed. Now a sink has a ``name`` (default ``<type>-<index>``, like sources).
"""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from motex_stream.stream.commands.runner import build_service
from motex_stream.stream.config import ConfigError, parse_config
from motex_stream.stream.metrics import start_metrics_server
from tests.conftest import KEGGIN


def _config(tmp_path: Path, sinks: str) -> Path:
    path = tmp_path / "motex.toml"
    path.write_text(
        f'[service]\nstate_dir = "{tmp_path / "state"}"\nmetrics_port = 0\n\n'
        f'[[models]]\nname = "k"\nstarting_model = "{KEGGIN / "109725.xyz"}"\n\n{sinks}'
    )
    return path


def _sink_series(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {
        s.labels["sink"]: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "motex_sink_errors_total"
    }


def test_two_sinks_of_one_type_get_their_own_series(tmp_path: Path) -> None:
    from motex_stream.stream.config import load_config

    config = load_config(
        _config(
            tmp_path,
            '[[sinks]]\ntype = "jsonl"\nname = "main-log"\npath = "a.jsonl"\n\n'
            '[[sinks]]\ntype = "jsonl"\nname = "backup-log"\npath = "b.jsonl"\n\n'
            '[[sinks]]\ntype = "jsonl"\npath = "c.jsonl"\n',
        )
    )
    assert [s.name for s in config.sinks] == ["main-log", "backup-log", "jsonl-2"]
    service = build_service(config)
    server = start_metrics_server(0, registry=service.metrics.registry)
    try:
        assert _sink_series(server.url) == {"main-log": 0, "backup-log": 0, "jsonl-2": 0}
    finally:
        server.close()
        service.stop()


def test_sink_names_must_be_unique() -> None:
    data = {
        "service": {"state_dir": "s"},
        "models": [{"name": "a", "starting_model": "a.xyz"}],
        "sinks": [
            {"type": "jsonl", "name": "out", "path": "a.jsonl"},
            {"type": "zmq", "name": "out"},
        ],
    }
    with pytest.raises(ConfigError, match="duplicate sink name"):
        parse_config(data)
