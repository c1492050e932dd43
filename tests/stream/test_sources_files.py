"""The .gr file-series source: natural order, one run, bad files skipped and counted."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from motex_stream.stream.frames import Frame, RunStart, RunStop
from motex_stream.stream.sources import make_source
from motex_stream.stream.sources.files_source import FileSeriesSource, _parse_columns, natural_key

KEGGIN = Path(__file__).resolve().parents[2] / "motex_stream" / "data" / "keggin"


def write_gr(path: Path, r: np.ndarray, g: np.ndarray, header: bool = True) -> None:
    lines = ["[PDF]", "qmax = 20.0", "", "#### start data", "#L r G"] if header else []
    lines += [f"{a:.6f} {b:.8f}" for a, b in zip(r, g, strict=True)]
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture
def series(tmp_path: Path, r_grid: np.ndarray, expected_gr) -> Path:  # type: ignore[no-untyped-def]
    for i in (1, 2, 10, 11, 3):
        path = tmp_path / f"frame_{i}.gr"
        write_gr(path, r_grid, expected_gr(i))
        os.utime(path, (1000.0 + i, 1000.0 + i))
    return tmp_path


def test_natural_order_and_contents(series: Path, r_grid: np.ndarray, expected_gr) -> None:  # type: ignore[no-untyped-def]
    pattern = str(series / "frame_*.gr")
    items = list(FileSeriesSource(pattern).items(threading.Event()))
    assert isinstance(items[0], RunStart) and items[0].uid == pattern
    assert isinstance(items[-1], RunStop) and items[-1].num_events == 5
    got = [item for item in items if isinstance(item, Frame)]
    numbers = [1, 2, 3, 10, 11]
    assert [f.seq for f in got] == [1, 2, 3, 4, 5]
    assert [f.time for f in got] == [1000.0 + i for i in numbers]
    for frame, i in zip(got, numbers, strict=True):
        assert frame.source == pattern
        np.testing.assert_allclose(frame.r, r_grid, atol=1e-6)
        np.testing.assert_allclose(frame.g, expected_gr(i), atol=1e-7)


def test_directory_and_factory(series: Path) -> None:
    source = make_source({"type": "files", "path": str(series)})
    frames = [i for i in source.items(threading.Event()) if isinstance(i, Frame)]
    assert len(frames) == 5


def test_natural_key() -> None:
    names = ["frame_10.gr", "frame_2.gr", "Frame_1.gr", "frame_2a.gr"]
    assert sorted(names, key=natural_key) == [
        "Frame_1.gr",
        "frame_2.gr",
        "frame_2a.gr",
        "frame_10.gr",
    ]


def test_unreadable_files_are_skipped(series: Path, r_grid: np.ndarray) -> None:
    (series / "frame_4.gr").write_text("#### start data\n1.0 abc\n")
    write_gr(series / "frame_5.gr", r_grid, np.full(r_grid.size, np.nan))
    source = FileSeriesSource(series)
    items = list(source.items(threading.Event()))
    frames = [i for i in items if isinstance(i, Frame)]
    assert [f.seq for f in frames] == [1, 2, 3, 6, 7]  # seq keeps the file position
    assert source.stats.malformed == 2 and source.stats.received == 7
    assert isinstance(items[-1], RunStop) and items[-1].num_events == 5


def test_real_keggin_file(tmp_path: Path) -> None:
    shutil.copy(KEGGIN / "DanMAX_AlphaKeggin.gr", tmp_path / "scan_1.gr")
    frames = [
        i for i in FileSeriesSource(tmp_path).items(threading.Event()) if isinstance(i, Frame)
    ]
    assert len(frames) == 1 and frames[0].r.size > 100


def test_fallback_parser(tmp_path: Path, r_grid: np.ndarray, expected_gr) -> None:  # type: ignore[no-untyped-def]
    write_gr(tmp_path / "a.gr", r_grid, expected_gr(0))
    r, g = _parse_columns(tmp_path / "a.gr")
    np.testing.assert_allclose(g, expected_gr(0), atol=1e-7)
    write_gr(tmp_path / "b.gr", r_grid, expected_gr(0), header=False)
    r, _ = _parse_columns(tmp_path / "b.gr")
    assert r.size == r_grid.size


def test_pacing_and_stop(series: Path) -> None:
    source = FileSeriesSource(series, interval=0.2)
    t0 = time.monotonic()
    n = sum(isinstance(i, Frame) for i in source.items(threading.Event()))
    assert n == 5 and time.monotonic() - t0 >= 0.75
    stop = threading.Event()
    seen = []
    for item in FileSeriesSource(series, interval=5.0).items(stop):
        seen.append(item)
        if isinstance(item, Frame):
            stop.set()
    assert sum(isinstance(i, Frame) for i in seen) == 1
    assert isinstance(seen[-1], RunStop) and seen[-1].exit_status == "abort"
