"""Saved state is used only as it was written: checksums, the previous generation, replay.

Each commit records the SHA-256 of every file of its generation folder and keeps the previous
generation beside it. A file that differs from what was written (a byte flipped, or a valid
booster of another model put in its place, which every other check accepts) is refused: the
previous generation is used instead, counted and logged, the bad one kept aside for
inspection; when neither is usable the model is prepared anew. ``replay --state-dir`` (the
real CLI) saves its progress when it ends cleanly.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from motex_stream.analysis.settings import LiveModelSettings
from motex_stream.stream.frames import Frame
from motex_stream.stream.live.analyzer import MotexFrameAnalyzer
from motex_stream.stream.sim.series import TwoMotifSeries
from tests.stream.two_motifs import PreparedState

NAME = "two-motifs"
EXE = str(Path(sys.executable).with_name("motex-stream"))
GENERATION_FILES = [
    "catalogue.npz",
    "explain.npz",
    "grid.npz",
    "surrogate/booster.ubj",
    "surrogate/surrogate.json",
]
#: built on a generation's first frame, so absent from a generation saved at preparation
ENSEMBLE_FILE = "ensemble.npz"


@pytest.fixture(scope="module")
def series(small_state: PreparedState) -> TwoMotifSeries:
    return dataclasses.replace(small_state.series, n_frames=4)  # the same frames


@pytest.fixture(scope="module")
def settings(small_state: PreparedState) -> LiveModelSettings:
    assert small_state.settings.name == NAME
    return small_state.settings


@pytest.fixture(scope="module")
def two_generations(  # type: ignore[no-untyped-def]
    tmp_path_factory, small_state: PreparedState, series, settings
) -> Path:
    """Prepared (generation 1: a copy of the session's preparation), then two frames
    analysed and saved (generation 2)."""
    root = small_state.copy(tmp_path_factory.mktemp("state") / "root")
    analyzer = MotexFrameAnalyzer.prepare(settings, None, root)
    assert analyzer is not None
    for seq in (1, 2):
        analyzer.analyze(Frame("run", seq, float(seq), series.r, series.frame(seq)))
    analyzer.save_state()
    return root


def _meta(d: Path) -> dict:
    return json.loads((d / "state.json").read_text())


def _copy(two_generations: Path, tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "state"
    shutil.copytree(two_generations, root)
    return root, root / NAME


def test_a_commit_records_every_file_and_keeps_the_previous_generation(
    two_generations: Path,
) -> None:
    d = two_generations / NAME
    meta = _meta(d)
    assert sorted(meta["files"]) == sorted([*GENERATION_FILES, ENSEMBLE_FILE])
    assert all(len(digest) == 64 for digest in meta["files"].values())
    previous = meta["previous"]
    assert previous["generation"] != meta["generation"]
    assert sorted(previous["files"]) == GENERATION_FILES
    assert "previous" not in previous  # one level: the last two commits
    assert sorted(p.name for p in d.glob("g*")) == sorted(
        [meta["generation"], previous["generation"]]
    )
    assert (meta["frames"], previous["frames"]) == (2, 0)


def _flip_byte(relative: str):  # type: ignore[no-untyped-def]
    def flip(gen: Path) -> None:
        path = gen / relative
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))

    return flip


def _valid_but_wrong_booster(gen: Path) -> None:
    """Another model's booster (the previous generation's): valid, same features."""
    previous = gen.parent / _meta(gen.parent)["previous"]["generation"]
    shutil.copy(previous / "surrogate" / "booster.ubj", gen / "surrogate" / "booster.ubj")


CHANGED = {
    "valid-but-wrong-booster": _valid_but_wrong_booster,
    **{f"flipped-{name.replace('/', '-')}": _flip_byte(name) for name in GENERATION_FILES},
}


@pytest.mark.parametrize("case", sorted(CHANGED))
def test_a_changed_file_falls_back_to_the_previous_generation(  # type: ignore[no-untyped-def]
    case: str, two_generations: Path, settings: LiveModelSettings, tmp_path: Path, caplog
) -> None:
    root, d = _copy(two_generations, tmp_path)
    meta = _meta(d)
    bad, good = meta["generation"], meta["previous"]["generation"]
    CHANGED[case](d / bad)
    with caplog.at_level(logging.WARNING):
        restored = MotexFrameAnalyzer.prepare(settings, None, root)
    assert restored is not None
    assert restored.state_load_fallbacks == 1
    assert restored._frames == 0, "the previous generation (before the two frames) is used"
    assert restored._generation_name == good
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "checksum" in warnings[0] and good in warnings[0], warnings
    # the refused generation is kept aside for inspection, outside the state folder
    assert not (d / bad).exists()
    assert len(list(root.glob(f"{NAME}.{bad}.bad-*"))) == 1
    # the next save commits a good generation on top of the one in use
    restored.save_state()
    again = MotexFrameAnalyzer.prepare(settings, None, root)
    assert again is not None and again.state_load_fallbacks == 0


def test_both_generations_changed_prepares_anew(  # type: ignore[no-untyped-def]
    two_generations: Path, settings: LiveModelSettings, tmp_path: Path, caplog
) -> None:
    root, d = _copy(two_generations, tmp_path)
    meta = _meta(d)
    _flip_byte("surrogate/booster.ubj")(d / meta["generation"])
    _flip_byte("catalogue.npz")(d / meta["previous"]["generation"])
    with caplog.at_level(logging.WARNING):
        restored = MotexFrameAnalyzer.prepare(settings, None, root)
    assert restored is None
    assert not d.exists() and len(list(root.glob(f"{NAME}.bad-*"))) == 1
    assert any("moved to" in r.getMessage() for r in caplog.records)


def test_the_booster_that_is_used_is_the_one_saved(
    two_generations: Path, settings: LiveModelSettings, tmp_path: Path
) -> None:
    """Without a change, the last generation is used as it was written (no fallback)."""
    root, d = _copy(two_generations, tmp_path)
    restored = MotexFrameAnalyzer.prepare(settings, None, root)
    assert restored is not None and restored.state_load_fallbacks == 0
    assert restored._frames == 2
    saved = (d / _meta(d)["generation"] / "surrogate" / "booster.ubj").read_bytes()
    assert bytes(restored.surrogate.booster.save_raw("ubj")) == saved


def write_gr(path: Path, r: np.ndarray, g: np.ndarray) -> None:
    path.write_text("\n".join(f"{a:.4f} {b:.8f}" for a, b in zip(r, g, strict=True)) + "\n")


def test_replay_with_state_dir_saves_at_its_clean_end(series, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(series.n_frames):
        write_gr(frames / f"frame_{i + 1}.gr", series.r, series.frame(i))
    state = tmp_path / "state"
    cmd = [
        EXE,
        "replay",
        "--frames",
        str(frames / "*.gr"),
        "--model",
        str(series.model_path),
        "--name",
        NAME,
        *("--catalogue", "300", "--refit", "300", "--rounds", "5", "--max-trees", "60"),
        *("--search-calls", "3", "--state-dir", str(state), "--out", str(tmp_path / "o.jsonl")),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    # fewer frames than the save interval (20): only the save at the end can hold them
    assert _meta(state / NAME)["frames"] == series.n_frames


def test_a_fallback_is_counted_in_metrics(  # type: ignore[no-untyped-def]
    two_generations: Path, settings: LiveModelSettings, tmp_path: Path
) -> None:
    """The service's /metrics counts a refused generation (the hook build_service adds)."""
    from prometheus_client import generate_latest

    from motex_stream.stream.commands.runner import LazyAnalyzer, _state_counts
    from motex_stream.stream.metrics import StreamMetrics

    root, d = _copy(two_generations, tmp_path)
    _valid_but_wrong_booster(d / _meta(d)["generation"])
    lazy = LazyAnalyzer(settings, root)
    metrics = StreamMetrics()
    metrics.on_scrape(_state_counts({NAME: lazy}, metrics))
    for _ in range(2):  # counted once, however often scraped
        scraped = generate_latest(metrics.registry).decode()
    assert f'motex_state_load_fallbacks_total{{model="{NAME}"}} 1.0' in scraped
