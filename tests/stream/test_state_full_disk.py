"""Saving state on a full disk: logged and counted, never a failed frame or a failed exit.

The state folder lives on a real, size-limited tmpfs (mounted for the test; this needs root,
elsewhere the tests are skipped) that a filler file fills up to a chosen amount of free space:
none at all, or enough for the catalogue and grid but not the surrogate's booster, where
xgboost's own writer fails (an ``XGBoostError`` with a C++ stack, not an ``OSError``). The
real analyzer runs a real :class:`StreamService` through ``serve_until_signalled``, the exit
path ``serve`` takes, which saves once more on the way out.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from motex_stream.analysis.settings import LiveModelSettings
from motex_stream.stream.commands.runner import LazyAnalyzer, _state_counts, serve_until_signalled
from motex_stream.stream.live.analyzer import MotexFrameAnalyzer
from motex_stream.stream.metrics import StreamMetrics
from motex_stream.stream.service import StreamService
from motex_stream.stream.sim.series import TwoMotifSeries
from motex_stream.stream.sources.memory_source import SeriesSource
from tests.stream.two_motifs import PreparedState

NAME = "two-motifs"
PAGE = 4096
N_FRAMES = 4


@pytest.fixture(scope="module")
def series(small_state: PreparedState) -> TwoMotifSeries:
    return dataclasses.replace(small_state.series, n_frames=N_FRAMES)  # the same frames


@pytest.fixture(scope="module")
def settings(small_state: PreparedState) -> LiveModelSettings:
    assert small_state.settings.name == NAME
    return small_state.settings


@pytest.fixture(scope="module")
def prepared(small_state: PreparedState) -> Path:
    """The session's one 300-motif preparation (read-only: each case copies it first)."""
    return small_state.directory


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 16 MiB tmpfs (a file system of its own, so it can be filled up)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _pages(path: Path) -> int:
    return -(-path.stat().st_size // PAGE)


def _fill(disk: Path, leave: int) -> Path:
    """Fill ``disk`` with one file until only ``leave`` bytes are free."""
    st = os.statvfs(disk)
    free = st.f_bavail * st.f_frsize
    filler = disk / "filler"
    with open(filler, "wb") as fh:
        os.posix_fallocate(fh.fileno(), 0, max(0, free - leave))
    st = os.statvfs(disk)
    assert abs(st.f_bavail * st.f_frsize - leave) <= PAGE
    return filler


def _free_for(case: str, gen: Path) -> int:
    """Free bytes that make the next save fail where ``case`` says."""
    if case == "no-space":
        return 0
    # the catalogue and grid fit, the booster does not: xgboost's writer fails
    booster = _pages(gen / "surrogate" / "booster.ubj")
    assert booster >= 4, "the booster is too small to cut in half"
    fits = _pages(gen / "catalogue.npz") + _pages(gen / "grid.npz") + 2  # + changes.json
    return (fits + booster // 2) * PAGE


@pytest.mark.parametrize("case", ["no-space", "booster-does-not-fit"])
def test_full_disk_never_fails_a_frame_or_the_exit(  # type: ignore[no-untyped-def]
    case: str, prepared: Path, settings: LiveModelSettings, series, small_disk: Path, caplog
) -> None:
    root = small_disk / "state"
    shutil.copytree(prepared, root)
    d = root / NAME
    committed = (d / "state.json").read_text()
    generation = sorted(p.name for p in d.glob("g*"))
    tables = sorted(p.name for p in d.glob("engine-*.npy"))  # written once, at preparation
    filler = _fill(small_disk, _free_for(case, d / generation[0]))

    lazy = LazyAnalyzer(settings, root, save_every=1)
    assert lazy.inner is not None
    source = SeriesSource(series.frame, series.r, N_FRAMES, uid=f"full-{uuid.uuid4().hex}")
    metrics = StreamMetrics()
    metrics.on_scrape(_state_counts({NAME: lazy}, metrics))  # as build_service registers it
    service = StreamService({NAME: lazy}, [source], [], restart_sources=False, metrics=metrics)
    with caplog.at_level(logging.INFO):
        summary = serve_until_signalled(service)  # the frames, then the save on the way out

    assert summary["processed"] == N_FRAMES
    assert summary["failed"] == 0
    # every frame's save and the exit save failed, each counted and logged in one line
    assert lazy.inner.state_save_failures == N_FRAMES + 1
    failures = [r for r in caplog.records if "cannot save state" in r.getMessage()]
    assert len(failures) == N_FRAMES + 1
    for record in failures:
        assert record.exc_info is None and "\n" not in record.getMessage()
    scraped = generate_latest(metrics.registry).decode()
    assert f'motex_state_save_failures_total{{model="{NAME}"}} {N_FRAMES + 1}.0' in scraped
    # the last good commit is untouched and no partial generation is left on the disk
    assert (d / "state.json").read_text() == committed
    left = sorted(p.name for p in d.iterdir() if p.name != "changes.json")
    assert left == sorted(["state.json", *generation, *tables])

    # space comes back: the next save commits, and the saved state is usable
    filler.unlink()
    lazy.inner.save_state()
    assert lazy.inner.state_save_failures == N_FRAMES + 1
    assert (d / "state.json").read_text() != committed
    restored = MotexFrameAnalyzer.prepare(settings, None, root)
    assert restored is not None
    assert restored._frames == N_FRAMES
