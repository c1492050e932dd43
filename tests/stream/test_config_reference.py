"""docs/configuration.md is generated from the configuration models and cannot drift."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from motex_stream.analysis.settings import LiveModelSettings
from motex_stream.stream.config import SINK_TYPES, SOURCE_TYPES, ServiceConfig, parse_config
from motex_stream.stream.config.reference import COMMAND, render

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "configuration.md"


def test_committed_page_matches_the_models() -> None:
    assert PAGE.read_text(encoding="utf-8") == render(), (
        f"docs/configuration.md is stale; regenerate it with `{COMMAND}`"
    )


def test_the_module_writes_the_page() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "motex_stream.stream.config.reference"],
        capture_output=True,
        text=True,
        encoding="utf-8",
        cwd=ROOT,
        timeout=120,
        check=True,
    )
    assert result.stdout == render()


@pytest.mark.parametrize(
    "model",
    [ServiceConfig, LiveModelSettings, *SOURCE_TYPES.values(), *SINK_TYPES.values()],
    ids=lambda m: m.__name__,
)
def test_every_key_is_listed(model: type) -> None:
    page = render()
    for key in model.model_fields:
        if key != "type":
            assert f"| `{key}` |" in page, key


def test_the_example_error_on_the_page_is_what_the_loader_says() -> None:
    data = {
        "service": {"state_dir": "s"},
        "models": [{"name": "a", "starting_model": "a.xyz", "rmax": 1500.0}],
    }
    with pytest.raises(ValueError) as info:
        parse_config(data)
    assert f"(`{info.value}`)" in render()


def test_index_links_the_page() -> None:
    assert "(configuration.md)" in (ROOT / "docs" / "index.md").read_text(encoding="utf-8")
