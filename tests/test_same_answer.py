"""The same question gets the same answer: on a loaded machine, and from every command."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest

from motex_stream.analysis.pipeline import run_analysis
from motex_stream.analysis.settings import LiveModelSettings, ModelSettings
from motex_stream.cli import main
from motex_stream.fitting.grfile import read_gr
from motex_stream.stream.frames import Frame
from motex_stream.stream.live.analyzer import MotexFrameAnalyzer
from tests.conftest import KEGGIN

XYZ = KEGGIN / "109725.xyz"


@contextmanager
def two_cpu_burners() -> Iterator[None]:
    """Two busy processes on a 2-core machine: what a shared beamline workstation looks like."""
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        yield
    finally:
        for p in burners:
            p.kill()
            p.wait()


@pytest.mark.slow
def test_analyze_is_bit_identical_on_a_loaded_machine(keggin_gr) -> None:
    settings = ModelSettings(starting_model=XYZ, catalogue_size=4000, seed=3)
    quiet = run_analysis(keggin_gr, settings)
    with two_cpu_burners():
        loaded = run_analysis(keggin_gr, settings)
    assert quiet.settings["search_trace"] == loaded.settings["search_trace"]
    assert quiet.settings["n_trees"] == loaded.settings["n_trees"]
    np.testing.assert_array_equal(quiet.contributions.value, loaded.contributions.value)
    assert quiet.settings["deterministic"] is True


@pytest.mark.slow
def test_live_preparation_is_bit_identical_on_a_loaded_machine(keggin_gr) -> None:
    data = read_gr(keggin_gr)
    frame = Frame("run", 1, 0.0, data.r, data.g, qmin=data.qmin, qmax=data.qmax)
    settings = LiveModelSettings(
        starting_model=XYZ, name="k", catalogue_size=3000, refit=1000, search_calls=8
    )
    quiet = MotexFrameAnalyzer.prepare(settings, frame)
    with two_cpu_burners():
        loaded = MotexFrameAnalyzer.prepare(settings, frame)
    assert quiet.search == loaded.search
    assert quiet.surrogate.booster.save_raw() == loaded.surrogate.booster.save_raw()
    a, b = quiet.analyze(frame), loaded.analyze(frame)
    # the typed per-atom arrays, bit for bit (NaN where either has no value)
    for name in ("atom", "value", "spread"):
        np.testing.assert_array_equal(
            getattr(a.contributions, name), getattr(b.contributions, name)
        )
    assert a.contributions.interval is not None and b.contributions.interval is not None
    np.testing.assert_array_equal(a.contributions.interval, b.contributions.interval)
    assert a.contributions.label == b.contributions.label


def test_replay_and_analyze_use_identical_settings(tmp_path, keggin_gr) -> None:
    """`replay` prepares on frame 1 with the Q range of its header, exactly like `analyze`."""
    frames = tmp_path / "frames"
    frames.mkdir()
    shutil.copy(keggin_gr, frames / "frame_001.gr")
    common = ["--model", str(XYZ), "--catalogue", "300", "--delta2", "0.5",
              "--generator", "cookie", "--seed", "4"]  # fmt: skip
    state = tmp_path / "state"
    rc = main(["replay", "--frames", str(frames / "*.gr"), *common, "--refit", "300",
               "--state-dir", str(state), "--out", str(tmp_path / "r.jsonl")])  # fmt: skip
    assert rc == 0
    replayed = json.loads((state / "109725" / "state.json").read_text())["settings"]
    assert main(["analyze", str(keggin_gr), *common, "--no-plots",
                 "--out", str(tmp_path / "a")]) == 0  # fmt: skip
    analyzed = json.loads((tmp_path / "a" / "report.json").read_text())["settings"]
    for field in ModelSettings.model_fields:
        assert replayed[field] == analyzed[field], field
    assert analyzed["qmax"] == pytest.approx(19.99898, abs=1e-5)
    assert (analyzed["delta2"], analyzed["generator"]) == (0.5, "cookie")


def test_replay_refuses_flags_next_to_a_config(tmp_path, capsys) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        f'[service]\nstate_dir = "s"\n[[models]]\nname = "k"\nstarting_model = "{XYZ}"\n'
    )
    rc = main(["replay", "--frames", "x/*.gr", "--config", str(config), "--delta2", "5",
               "--out", str(tmp_path / "o.jsonl")])  # fmt: skip
    assert rc == 2
    assert "--delta2: not allowed with --config" in capsys.readouterr().err


def test_replay_without_a_model_is_a_clear_error(tmp_path, capsys) -> None:
    rc = main(["replay", "--frames", "x/*.gr", "--out", str(tmp_path / "o.jsonl")])
    assert rc == 2
    assert "give --config FILE or --model" in capsys.readouterr().err
