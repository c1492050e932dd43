"""Saved model state the service can always recover from: the corruption matrix.

One real preparation (catalogue fit, search, GBDT) is saved once; every case copies it, breaks
it in one way and restarts from it. An unusable state must give one log line (no traceback),
be moved aside for inspection and lead to a fresh preparation; leftovers of an interrupted save
must be cleaned up while the state itself is reloaded. Nothing may raise.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import xgboost as xgb

from motex_stream.analysis.settings import LiveModelSettings
from motex_stream.catalogue import Catalogue
from motex_stream.stream.commands.runner import LazyAnalyzer
from motex_stream.stream.frames import Frame
from motex_stream.stream.live.analyzer import MotexFrameAnalyzer
from motex_stream.stream.sim.series import TwoMotifSeries
from tests.stream.two_motifs import PreparedState

NAME = "two-motifs"


@pytest.fixture(scope="module")
def series(small_state: PreparedState) -> TwoMotifSeries:
    return small_state.series


@pytest.fixture(scope="module")
def settings(small_state: PreparedState) -> LiveModelSettings:
    assert small_state.settings.name == NAME
    return small_state.settings


@pytest.fixture(scope="module")
def prepared(small_state: PreparedState) -> Path:
    """The session's one 300-motif preparation (read-only: every case copies it first)."""
    return small_state.directory


def _meta(d: Path) -> dict:
    return json.loads((d / "state.json").read_text())


def _gen(d: Path) -> Path:
    return d / _meta(d)["generation"]


def _edit_meta(**changes: object) -> Callable[[Path], None]:
    def edit(d: Path) -> None:
        meta = _meta(d)
        for key, value in changes.items():
            if value is _DROP:
                meta.pop(key)
            else:
                meta[key] = value
        (d / "state.json").write_text(json.dumps(meta))

    return edit


_DROP = object()


def _edit_settings(**changes: object) -> Callable[[Path], None]:
    def edit(d: Path) -> None:
        meta = _meta(d)
        meta["settings"].update(changes)
        (d / "state.json").write_text(json.dumps(meta))

    return edit


def _truncate(rel: str) -> Callable[[Path], None]:
    def edit(d: Path) -> None:
        path = _gen(d) / rel
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])

    return edit


def _grid(r: np.ndarray | Callable[[np.ndarray], np.ndarray]) -> Callable[[Path], None]:
    def edit(d: Path) -> None:
        path = _gen(d) / "grid.npz"
        with np.load(path) as f:
            old = f["r"]
        np.savez(path, r=r(old) if callable(r) else r)

    return edit


def _wrong_catalogue(d: Path) -> None:
    masks = np.ones((20, 7), bool)  # 7 atoms, the model has more
    Catalogue(masks, "paper", 0).save(_gen(d) / "catalogue.npz")


def _wrong_features(d: Path) -> None:
    rng = np.random.default_rng(0)
    booster = xgb.train({"max_depth": 2}, xgb.DMatrix(rng.random((20, 3)), rng.random(20)), 2)
    booster.save_model(_gen(d) / "surrogate" / "booster.ubj")


def _path_is_file(d: Path) -> None:
    shutil.rmtree(d)
    d.write_text("not a folder")


def _state_json_is_dir(d: Path) -> None:
    (d / "state.json").unlink()
    (d / "state.json").mkdir()


BROKEN: dict[str, Callable[[Path], None]] = {
    "state-json-empty": lambda d: (d / "state.json").write_text(""),
    "state-json-binary": lambda d: (d / "state.json").write_bytes(b"\x00\xff\xfe garbage"),
    "state-json-list": lambda d: (d / "state.json").write_text("[1, 2, 3]"),
    "state-json-truncated": lambda d: (d / "state.json").write_text(
        (d / "state.json").read_text()[:40]
    ),
    "state-json-is-a-folder": _state_json_is_dir,
    "old-version": _edit_meta(version=2),
    "other-settings": _edit_meta(fingerprint="0" * 64),
    "no-settings": _edit_meta(settings=_DROP),
    "qmax-not-a-number": _edit_settings(qmax="NaN"),
    "q-range-reversed": _edit_settings(qmin=30.0, qmax=20.0),
    "frames-negative": _edit_meta(frames=-3),
    "frames-a-string": _edit_meta(frames="many"),
    "generation-escapes": _edit_meta(generation="../../elsewhere"),
    "generation-missing": lambda d: shutil.rmtree(_gen(d)),
    "catalogue-truncated": _truncate("catalogue.npz"),
    "catalogue-wrong-shape": _wrong_catalogue,
    "grid-truncated": _truncate("grid.npz"),
    "grid-two-points": _grid(np.array([1.0, 10.0])),
    "grid-nan": _grid(lambda r: np.where(np.arange(r.size) == 5, np.nan, r)),
    "grid-decreasing": _grid(lambda r: r[::-1]),
    "grid-other-range": _grid(lambda r: r + 3.0),
    "surrogate-missing": lambda d: shutil.rmtree(_gen(d) / "surrogate"),
    "surrogate-garbage": lambda d: (_gen(d) / "surrogate" / "booster.ubj").write_bytes(
        b"\x01" * 99
    ),
    "surrogate-wrong-features": _wrong_features,
    "surrogate-state-list": lambda d: (_gen(d) / "surrogate" / "surrogate.json").write_text("[]"),
    "state-path-is-a-file": _path_is_file,
    "files-without-state-json": lambda d: (d / "state.json").unlink(),
}


def _resign(d: Path) -> None:
    """Record the generation's files as they are now: the state as if written that way, so
    each check behind the checksums is reached (test_state_checksums tests the checksums)."""
    try:
        meta = _meta(d)
        gen = d / meta["generation"]
    except (OSError, ValueError, TypeError, KeyError):
        return
    if gen.is_dir() and gen.parent == d:
        meta["files"] = {
            p.relative_to(gen).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(gen.rglob("*"))
            if p.is_file()
        }
        (d / "state.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_unusable_state_is_moved_aside_and_rebuilt(
    case: str, prepared: Path, settings: LiveModelSettings, tmp_path: Path, caplog
) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "state"
    shutil.copytree(prepared, root)
    BROKEN[case](root / NAME)
    _resign(root / NAME)
    with caplog.at_level(logging.INFO):
        restored = MotexFrameAnalyzer.prepare(settings, None, root)
    assert restored is None
    errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert errors[0].exc_info is None, "a traceback in the log"
    assert "moved to" in errors[0].getMessage()
    aside = list(root.glob(f"{NAME}.bad-*"))
    assert len(aside) == 1, "the broken state is kept for inspection"
    assert not (root / NAME).exists()


def _leftover_old_layout(d: Path) -> None:
    """What the previous layout's interrupted save left: a non-empty surrogate.old."""
    (d / "surrogate.old").mkdir()
    (d / "surrogate.old" / "booster.ubj").write_bytes(b"old")
    (d / "catalogue.npz.tmp").write_bytes(b"half")


def _leftover_half_generation(d: Path) -> None:
    """Killed while writing the next generation: its folder exists, state.json is older."""
    nxt = d / "g999999"
    nxt.mkdir()
    (nxt / "catalogue.npz").write_bytes(b"half written")
    (d / "state.json.tmp").write_text('{"version": ')


LEFTOVERS: dict[str, Callable[[Path], None]] = {
    "old-layout-surrogate-old": _leftover_old_layout,
    "half-written-generation": _leftover_half_generation,
}


@pytest.mark.parametrize("case", sorted(LEFTOVERS))
def test_leftovers_of_an_interrupted_save_are_cleaned(
    case: str, prepared: Path, settings: LiveModelSettings, tmp_path: Path, caplog
) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "state"
    shutil.copytree(prepared, root)
    d = root / NAME
    before = _meta(d)["generation"]
    LEFTOVERS[case](d)
    with caplog.at_level(logging.WARNING):
        restored = MotexFrameAnalyzer.prepare(settings, None, root)
    assert restored is not None
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    tables = _meta(d)["engine"]["file"]  # the engine's class kernels, written once
    assert sorted(p.name for p in d.iterdir()) == sorted(["state.json", before, tables])
    assert restored.save_state()  # and the next save works (the old layout: OSError 39)
    # the new generation, and the one it was loaded from kept beside it as the fallback
    after = sorted(p.name for p in d.iterdir())
    assert after == sorted(["state.json", _meta(d)["generation"], before, tables])


def test_empty_state_without_reference_prepares_on_first_frame(
    prepared: Path, settings: LiveModelSettings, series, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "state"
    shutil.copytree(prepared, root)
    (root / NAME / "state.json").write_text("")
    lazy = LazyAnalyzer(settings, root, save_every=2)
    assert lazy.inner is None  # no crash at start-up; preparation waits for data
    for seq in range(1, 6):
        lazy.analyze(Frame("run", seq, float(seq), series.r, series.frame(seq - 1)))
    meta = _meta(root / NAME)
    assert meta["frames"] == 4, "warm-start progress is saved every 2 frames"
    again = LazyAnalyzer(settings, root)
    assert again.inner is not None and again.inner.surrogate.n_trees > 0
    assert len(list(root.glob(f"{NAME}.bad-*"))) == 1


def test_a_start_loads_the_model_and_reads_the_state_once(
    prepared: Path, settings: LiveModelSettings, series, tmp_path: Path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    """A service's start is one ``MotexFrameAnalyzer.prepare``: nothing saved and no
    reference loads nothing (the model waits for its first frame); an unusable state beside a
    reference is read once, moved aside once, and the starting model is loaded once for the
    fresh preparation (before: restored, then prepared: the model loaded twice)."""
    from motex_stream.analysis import steps

    loads: list[str] = []
    load_model = steps.load_model

    def counted(s: LiveModelSettings):  # type: ignore[no-untyped-def]
        loads.append(s.name)
        return load_model(s)

    monkeypatch.setattr(steps, "load_model", counted)
    assert MotexFrameAnalyzer.prepare(settings) is None
    assert LazyAnalyzer(settings, tmp_path / "nothing saved").inner is None
    assert loads == []

    root = tmp_path / "state"
    shutil.copytree(prepared, root)
    (root / NAME / "state.json").write_text("")
    reference = tmp_path / "frame1.gr"
    np.savetxt(reference, np.c_[series.r, series.frame(0)], header="r G")
    lazy = LazyAnalyzer(settings.updated(reference=reference), root)
    assert lazy.inner is not None and lazy.inner.surrogate.n_trees > 0
    assert loads == [NAME]
    assert len(list(root.glob(f"{NAME}.bad-*"))) == 1
    assert (root / NAME / "state.json").read_text(), "the fresh preparation is saved"


def test_progress_is_saved_after_save_interval_seconds(
    prepared: Path, settings: LiveModelSettings, series, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "state"
    shutil.copytree(prepared, root)
    frames_before = _meta(root / NAME)["frames"]
    lazy = LazyAnalyzer(settings, root, save_every=1000, save_interval=3600.0)
    lazy.analyze(Frame("run", 1, 1.0, series.r, series.frame(1)))
    assert _meta(root / NAME)["frames"] == frames_before  # neither bound reached yet
    assert lazy.inner is not None
    lazy.inner.save_interval = 0.05
    time.sleep(0.1)
    lazy.analyze(Frame("run", 2, 2.0, series.r, series.frame(2)))
    assert _meta(root / NAME)["frames"] == frames_before + 2
