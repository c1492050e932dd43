"""A warm restart answers as if the service had never stopped, and starts without
recomputing what it saved (issue 23).

A restarted analyzer takes up the saved SHAP matrix, interval ensemble and engine tables
(``live_state``), so every frame after a restart is published bit for bit as the analyzer
that saved would have published it: before, the SHAP of the serving trees was summed anew in
another order and the ensemble was rebuilt on the first frame after the restart, so the
intervals (and with them labels) of a restarted service differed. A state of the previous
format loads, computes what it lacks (logged) and saves it with the next commit.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from motex_stream.stream.frames import Frame
from motex_stream.stream.live import live_state
from motex_stream.stream.live.analyzer import MotexFrameAnalyzer
from motex_stream.stream.live.analyzer_protocol import FrameResult
from tests.stream.two_motifs import PreparedState

NAME = "two-motifs"
#: refitting part of the catalogue per frame (so a generation's warm-start frames are fitted
#: on other motifs than its rebuilt frame); the small model's cap rebuilds every third frame
CHANGES = {"refit": 200}


def _frame(series, seq: int) -> Frame:  # type: ignore[no-untyped-def]
    """Frames close to frame 1 (no drift: warm starts between the rebuilds at the cap)."""
    return Frame("run", seq, float(seq), series.r, series.frame(0) * (1 + 0.001 * seq))


def assert_same_result(a: FrameResult, b: FrameResult) -> None:
    """Every number a frame publishes, bit for bit (NaN where both have none)."""
    ca, cb = a.contributions, b.contributions
    for name in ("atom", "element", "value", "spread", "interval", "label"):
        np.testing.assert_array_equal(getattr(ca, name), getattr(cb, name), err_msg=name)
    assert a.change == b.change
    np.testing.assert_array_equal(a.best.mask, b.best.mask)
    assert (a.best.rwp, a.best.scale) == (b.best.rwp, b.best.scale)
    qa, qb = a.model_quality, b.model_quality
    assert (qa.mae, qa.n_trees, qa.rebuilt, qa.generation) == (
        qb.mae,
        qb.n_trees,
        qb.rebuilt,
        qb.generation,
    )


def _saved_after(small_state: PreparedState, tmp_path: Path, frames: int):  # type: ignore[no-untyped-def]
    """An analyzer that analysed ``frames`` frames and saved, and a copy of what it saved."""
    settings = small_state.settings.updated(**CHANGES)
    root = small_state.copy(tmp_path / "state")
    first = MotexFrameAnalyzer.prepare(settings, None, root)
    assert first is not None
    results = [first.analyze(_frame(small_state.series, seq)) for seq in range(1, frames + 1)]
    assert first.save_state()
    saved = tmp_path / "saved"
    shutil.copytree(root, saved)
    return settings, first, results, saved


# after frame 3 the surrogate has just been rebuilt (its ensemble built on frame 3); after
# frame 4 it carries one frame of warm-start trees (its SHAP summed over two updates)
@pytest.mark.parametrize("saved_after", [3, 4])
def test_a_warm_restart_answers_bit_for_bit_as_the_analyzer_that_saved(  # type: ignore[no-untyped-def]
    small_state: PreparedState, tmp_path: Path, saved_after: int
) -> None:
    settings, first, results, saved = _saved_after(small_state, tmp_path, saved_after)
    assert [r.model_quality.rebuilt for r in results[:3]] == [False, False, True]
    later = range(saved_after + 1, saved_after + 5)
    expected = [first.analyze(_frame(small_state.series, seq)) for seq in later]
    assert not all(r.model_quality.rebuilt for r in expected), "warm-start frames are compared"
    again = MotexFrameAnalyzer.prepare(settings, None, saved)
    assert again is not None and again.state_load_fallbacks == 0
    np.testing.assert_array_equal(again.engine.class_kernels, first.engine.class_kernels)
    for seq, want in zip(later, expected, strict=True):
        assert_same_result(want, again.analyze(_frame(small_state.series, seq)))


def _as_version_4(d: Path) -> None:
    """Rewrite a state as the previous format wrote it: no engine tables, SHAP matrix or
    ensemble, version 4 (the generation's recorded files then match what is there)."""
    meta = json.loads((d / "state.json").read_text())
    for record in (meta, meta.get("previous")):
        if not isinstance(record, dict):
            continue
        record["version"] = 4
        record.pop("engine", None)
        gen = d / record["generation"]
        for name in (live_state.EXPLAIN_FILE, live_state.ENSEMBLE_FILE):
            (gen / name).unlink(missing_ok=True)
            record["files"].pop(name, None)
    for tables in d.glob("engine-*.npy"):
        tables.unlink()
    (d / "state.json").write_text(json.dumps(meta))


def test_a_state_of_the_previous_format_loads_and_is_upgraded(  # type: ignore[no-untyped-def]
    small_state: PreparedState, tmp_path: Path, caplog
) -> None:
    settings, first, _, saved = _saved_after(small_state, tmp_path, 4)
    d = saved / NAME
    _as_version_4(d)
    with caplog.at_level(logging.INFO):
        old = MotexFrameAnalyzer.prepare(settings, None, saved)
    assert old is not None and old.state_load_fallbacks == 0, "loaded, not prepared anew"
    assert old._frames == 4
    messages = [r.getMessage() for r in caplog.records]
    assert any("state of version 4" in m and "computed now" in m for m in messages), messages
    assert any("engine tables computed" in m for m in messages), messages
    # what it computed is what the saved analyzer held: the same tables, and the same values
    # on the next frame up to the order in which the SHAP of the trees was summed (the old
    # format's restarts were never bit-identical)
    np.testing.assert_array_equal(old.engine.class_kernels, first.engine.class_kernels)
    seq = 5
    want = first.analyze(_frame(small_state.series, seq))
    got = old.analyze(_frame(small_state.series, seq))
    np.testing.assert_allclose(got.contributions.value, want.contributions.value, rtol=1e-12)
    # the next commit writes the current format, and a restart from it computes nothing
    assert old.save_state()
    meta = json.loads((d / "state.json").read_text())
    assert meta["version"] == live_state.STATE_VERSION
    assert (d / meta["engine"]["file"]).is_file()
    assert live_state.EXPLAIN_FILE in meta["files"]
    caplog.clear()
    with caplog.at_level(logging.INFO):
        again = MotexFrameAnalyzer.prepare(settings, None, saved)
    assert again is not None
    messages = [r.getMessage() for r in caplog.records]
    assert not any("computed" in m or "not used" in m for m in messages), messages


def test_engine_tables_are_written_once_and_a_bad_copy_is_recomputed(  # type: ignore[no-untyped-def]
    small_state: PreparedState, tmp_path: Path, caplog
) -> None:
    settings, first, _, saved = _saved_after(small_state, tmp_path, 2)
    d = tmp_path / "state" / NAME
    tables = list(d.glob("engine-*.npy"))
    assert len(tables) == 1
    written = tables[0].stat().st_mtime_ns
    first.analyze(_frame(small_state.series, 3))
    assert first.save_state()  # a later commit names the same tables, not rewritten
    meta = json.loads((d / "state.json").read_text())
    assert meta["engine"]["file"] == tables[0].name == meta["previous"]["engine"]["file"]
    assert tables[0].stat().st_mtime_ns == written
    # a flipped byte: refused by its checksum, recomputed (the same numbers), written again
    bad = saved / NAME / tables[0].name
    data = bytearray(bad.read_bytes())
    data[len(data) // 2] ^= 0x01
    bad.write_bytes(bytes(data))
    with caplog.at_level(logging.INFO):
        again = MotexFrameAnalyzer.prepare(settings, None, saved)
    assert again is not None and again.state_load_fallbacks == 0
    assert any("fail their checksum" in r.getMessage() for r in caplog.records)
    np.testing.assert_array_equal(again.engine.class_kernels, first.engine.class_kernels)
    assert again.save_state()
    assert bad.read_bytes() == tables[0].read_bytes()


def test_the_configured_tree_cap_applies_after_a_restart(  # type: ignore[no-untyped-def]
    small_state: PreparedState, tmp_path: Path
) -> None:
    """``max_trees`` is a run-time setting (a changed cap keeps the state): a restarted
    service enforces the configured cap, not the one the state was saved with."""
    root = small_state.copy(tmp_path / "state")
    for cap in (60, 150):
        restored = MotexFrameAnalyzer.prepare(
            small_state.settings.updated(max_trees=cap), None, root
        )
        assert restored is not None
        assert restored.surrogate.configured_max_trees == cap


def test_the_engine_tables_key_ignores_compiled_caches() -> None:
    """The tables' name digests the engine's source and data, never ``__pycache__``: numba
    writes its kernel caches there on first use, so a state saved before they existed named
    tables that the next start (with the caches) refused and recomputed (bench_restart)."""
    files = live_state.engine_code_files()
    names = {p.name for p in files}
    assert {"batched.py", "realspace.py", "grid.py"} <= names
    assert not any("__pycache__" in p.parts for p in files)
    assert all(p.suffix in (".py", ".csv") for p in files), names
