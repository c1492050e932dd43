"""The .gr file-series source: natural order, one run, bad files skipped and counted."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from motex_stream.stream.config import FilesSourceConfig
from motex_stream.stream.frames import Frame, RunStart, RunStop
from motex_stream.stream.sources import make_source
from motex_stream.stream.sources.files_source import FileSeriesSource, natural_key

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
    source = make_source(FilesSourceConfig(type="files", name="archive-7", glob=str(series)))
    assert source.name == "archive-7"
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


def test_real_keggin_file_carries_its_header_q_range(tmp_path: Path) -> None:
    shutil.copy(KEGGIN / "DanMAX_AlphaKeggin.gr", tmp_path / "scan_1.gr")
    shutil.copy(KEGGIN / "DanMAX_AlphaKeggin_nyquist.gr", tmp_path / "scan_2.gr")
    frames = [
        i for i in FileSeriesSource(tmp_path).items(threading.Event()) if isinstance(i, Frame)
    ]
    assert len(frames) == 2
    full, nyquist = frames
    # the xPDFsuite header says "qmin = 0.7" and "qmax = 19.9989799422", read as written
    assert full.qmin == 0.7 and full.qmax == 19.9989799422
    assert full.r.size == 3001 and full.r[0] == 0.0 and full.r[-1] == 30.0
    assert full.g[1] == 1.15625e-05  # second data row, exactly as in the file
    # the Nyquist copy is bare columns: the source does not invent a Q range
    assert nyquist.qmin is None and nyquist.qmax is None
    np.testing.assert_array_equal(nyquist.r, full.r[::10])


def test_header_q_range_per_file(tmp_path: Path, r_grid: np.ndarray, expected_gr) -> None:  # type: ignore[no-untyped-def]
    write_gr(tmp_path / "f_1.gr", r_grid, expected_gr(1))  # header: qmax = 20.0, no qmin
    write_gr(tmp_path / "f_2.gr", r_grid, expected_gr(2), header=False)
    lines = ["[PDF]", "qmin = 1.5", "qmax = 24.5", "#### start data"]
    lines += [f"{a:.6f} {b:.8f} 0.01" for a, b in zip(r_grid, expected_gr(3), strict=True)]
    (tmp_path / "f_3.gr").write_text("\n".join(lines) + "\n")
    frames = [
        i for i in FileSeriesSource(tmp_path).items(threading.Event()) if isinstance(i, Frame)
    ]
    assert [(f.qmin, f.qmax) for f in frames] == [(None, 20.0), (None, None), (1.5, 24.5)]
    np.testing.assert_allclose(frames[1].g, expected_gr(2), atol=1e-7)  # headerless columns
    np.testing.assert_allclose(frames[2].g, expected_gr(3), atol=1e-7)  # third column is dG


def test_strict_reader_rejects_what_a_lenient_one_would_guess(tmp_path: Path) -> None:
    """A row with too many columns or an r that runs backwards is a skipped file, not data."""
    body = "\n".join(f"{0.1 * i:.2f} {i}" for i in range(1, 20))
    (tmp_path / "a_1.gr").write_text("#### start data\n" + body + "\n")
    (tmp_path / "a_2.gr").write_text("#### start data\n" + body + "\n0.5 1 2 3 4\n")
    (tmp_path / "a_3.gr").write_text("#### start data\n" + body + "\n0.05 1\n")
    source = FileSeriesSource(tmp_path)
    frames = [i for i in source.items(threading.Event()) if isinstance(i, Frame)]
    assert [f.seq for f in frames] == [1]
    assert source.stats.malformed == 2


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
