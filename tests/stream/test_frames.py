"""A frame is validated once, where it enters, and carried as a :class:`ValidFrame` after that.

Issue 24: a frame used to be checked three times (the document assembler, the service, the
analyzer). Now the type is the proof: a ``ValidFrame`` cannot be built from unusable data,
``validate_frame`` of one is the frame itself, and the service queues only valid frames, so
an analyzer is never handed a frame that was not checked, nor one checked twice.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import pytest
from bluesky import RunEngine

from motex_stream.stream.frames import (
    Frame,
    FrameError,
    RunStart,
    RunStop,
    StreamItem,
    ValidFrame,
    validate_frame,
)
from motex_stream.stream.live.analyzer_protocol import FrameResult
from motex_stream.stream.service import StreamService
from motex_stream.stream.sources.base import DocumentAssembler
from tests.stream.test_assembler import feed, frames, record
from tests.stream.test_service import ListSource, RecordingSink, ToyAnalyzer

R = np.linspace(1.0, 10.0, 80)

BAD = {
    "nan": (R, np.where(np.arange(80) == 7, np.nan, np.cos(R)), "NaN or infinite"),
    "inf": (R, np.where(np.arange(80) == 7, np.inf, np.cos(R)), "NaN or infinite"),
    "lengths": (R, np.zeros(50), "r has 80 points but G has 50"),
    "short": (R[:5], np.cos(R[:5]), "only 5 points"),
    "two-d": (R, np.zeros((80, 1)), "1-D"),
    "decreasing": (R[::-1], np.cos(R), "not increasing"),
    "repeated r": (np.r_[R[:10], R[9:]], np.zeros(81), "not increasing"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_valid_frame_cannot_hold_unusable_data(case: str) -> None:
    r, g, why = BAD[case]
    with pytest.raises(FrameError, match=why):
        ValidFrame("run", 3, 0.0, r, g)
    with pytest.raises(FrameError, match="frame 3 of run"):
        validate_frame(Frame("run", 3, 0.0, r, g))
    # replacing the data of a valid frame checks the new data too
    good = ValidFrame("run", 3, 0.0, R, np.cos(R))
    with pytest.raises(FrameError, match=why):
        dataclasses.replace(good, r=r, g=g)


def test_validation_converts_once_and_is_then_the_identity() -> None:
    raw = Frame("run", 1, 2.5, list(R), [float(x) for x in np.cos(R)], {"k": 1}, 0.5, 20.0)
    valid = validate_frame(raw)
    assert type(valid) is ValidFrame and isinstance(valid, Frame)
    assert valid.r.dtype == np.float64 and valid.g.dtype == np.float64
    np.testing.assert_array_equal(valid.g, np.cos(R))
    assert (valid.source, valid.seq, valid.time, valid.qmin, valid.qmax) == (
        "run",
        1,
        2.5,
        0.5,
        20.0,
    )
    assert valid.run_metadata == {"k": 1}
    assert validate_frame(valid) is valid  # nothing is checked, nor copied, a second time


def test_the_document_assembler_yields_valid_frames(
    run_engine: RunEngine, r_grid: np.ndarray, expected_gr: Callable[[int], np.ndarray]
) -> None:
    def series(i: int) -> np.ndarray:
        return np.full(r_grid.size, np.nan) if i == 1 else expected_gr(i)

    asm = DocumentAssembler()
    got = frames(feed(asm, record(run_engine, series, r_grid, 3)))
    assert [f.seq for f in got] == [1, 3] and all(type(f) is ValidFrame for f in got)
    assert asm.stats.malformed_kinds == {"bad_frame": 1}


class RecordingAnalyzer(ToyAnalyzer):
    """The toy analyzer, keeping each frame it is handed."""

    def __init__(self) -> None:
        super().__init__()
        self.handed: list[Frame] = []

    def analyze(self, frame: ValidFrame) -> FrameResult:
        self.handed.append(frame)
        return super().analyze(frame)


def test_the_service_hands_analyzers_only_frames_validated_at_intake() -> None:
    """Plain frames from a source are validated at the intake; an unusable one never reaches
    the analyzer (counted as received and failed); a source's ValidFrame is passed on as the
    same object, not checked again."""
    toy = RecordingAnalyzer()
    items: list[StreamItem] = [
        RunStart("run-x", 0.0),
        Frame("run-x", 1, 1.0, R, np.cos(R)),
        Frame("run-x", 2, 1.0, R, np.full(80, np.nan)),
        Frame("run-x", 3, 1.0, R[::-1], np.cos(R)),
        ValidFrame("run-x", 4, 1.0, R, np.sin(R)),
        RunStop("run-x", 2.0),
    ]
    rec = RecordingSink()
    summary = StreamService({"toy": toy}, [ListSource(items)], [rec]).run()
    assert rec.seqs == [1, 4]
    assert [type(f) for f in toy.handed] == [ValidFrame, ValidFrame]
    assert toy.handed[1] is items[4]
    assert summary["received"] == 4 and summary["failed"] == 2 and summary["processed"] == 2
    assert summary["runs"]["run-x"]["failed"] == 2
