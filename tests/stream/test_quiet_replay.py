"""An unpaced replay logs no "cannot keep up" warning (issue 22 item 6).

``replay`` without ``--speed`` reads the whole run at once by design: every frame "arrives" at
the same moment, so the headroom check warned "model ... cannot keep up ... frames arrive every
0.000 s ... the backlog grows" on every such replay (measured: ``replay --tiled`` of a 12-frame
run). A live source that outpaces the analysis still warns.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from motex_stream.stream.frames import Frame, RunStart, RunStop, StreamItem
from motex_stream.stream.live.analyzer_protocol import FrameResult
from motex_stream.stream.service import StreamService
from motex_stream.stream.sources import FileSeriesSource
from motex_stream.stream.sources.base import FrameSource, SourceStats
from tests.conftest import KEGGIN
from tests.stream.results import frame_result

N_FRAMES = 8


class SlowAnalyzer:
    """Takes 30 ms a frame: slower than frames that all come at once."""

    name = "slow"

    @property
    def fit_r(self) -> np.ndarray:
        return np.linspace(2.0, 8.0, 10)

    def analyze(self, frame: Frame) -> FrameResult:
        time.sleep(0.03)
        return frame_result(
            model=self.name,
            contributions=[{"atom": 1, "element": "W", "value": -0.1, "spread": 0.0}],
            best={"mask": [1], "rwp": 0.2},
            timing={"fit": 0.03},
            model_quality={"mae": 0.01},
            n_refit=1,
        )


class BurstLiveSource(FrameSource):
    """A live source (``paced``, the default) whose frames come faster than the analysis."""

    name = "live-burst"

    def __init__(self) -> None:
        self.stats = SourceStats()

    def items(self, stop_event: threading.Event) -> Iterator[StreamItem]:
        r = np.linspace(1.0, 10.0, 50)
        yield RunStart("live", time.time())
        for seq in range(1, N_FRAMES + 1):
            yield Frame("live", seq, time.time(), r, np.cos(r) * seq)
        yield RunStop("live", time.time())


def _keep_up_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING and "cannot keep up" in r.getMessage()
    ]


def test_unpaced_file_replay_does_not_warn(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for i in range(N_FRAMES):
        shutil.copy(KEGGIN / "DanMAX_AlphaKeggin.gr", tmp_path / f"frame_{i:02d}.gr")
    source = FileSeriesSource(str(tmp_path / "*.gr"))  # no interval: as fast as possible
    with caplog.at_level(logging.INFO):
        summary = StreamService({"slow": SlowAnalyzer()}, [source], []).run()
    assert summary["processed"] == N_FRAMES
    assert _keep_up_warnings(caplog) == []


def test_a_live_source_that_outpaces_the_analysis_still_warns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO):
        summary = StreamService({"slow": SlowAnalyzer()}, [BurstLiveSource()], []).run()
    assert summary["processed"] == N_FRAMES
    assert len(_keep_up_warnings(caplog)) == 1


def test_a_documented_resume_logs_no_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Rerunning a replay after a kill skips what was published, at INFO: that is the
    documented resume, not a fault. Before: "frame 1 ... was published before; dropped" was
    a WARNING on every resume."""
    for i in range(4):
        shutil.copy(KEGGIN / "DanMAX_AlphaKeggin.gr", tmp_path / f"frame_{i:02d}.gr")
    source = FileSeriesSource(str(tmp_path / "*.gr"))
    with caplog.at_level(logging.INFO):
        summary = StreamService(
            {"slow": SlowAnalyzer()}, [source], [], resume_after={source.pattern: 2}
        ).run()
    assert summary["processed"] == 2 and summary["duplicates"] == 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == []
    assert any("published before the restart" in r.getMessage() for r in caplog.records)


def test_a_resumed_run_resent_by_the_transport_logs_no_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """After a restart the source takes the run up from the journal; an event published
    before the restart and sent again is skipped at INFO (the documented resume: a transport
    that replays). A duplicate of an event of this session still warns."""
    from motex_stream.stream.journal import RunJournal
    from motex_stream.stream.sources.base import DocumentAssembler

    run, desc = "run-1", "desc-1"
    r = np.linspace(1.0, 10.0, 50)

    def event(seq: int) -> dict[str, object]:
        return {
            "uid": f"ev-{seq}-{time.monotonic_ns()}",
            "descriptor": desc,
            "seq_num": seq,
            "time": time.time(),
            "data": {"pdf_gr": np.cos(r) * seq},
        }

    journal = RunJournal(tmp_path / "journal")
    first = DocumentAssembler(source_name="beamline", journal=journal)
    first.process("start", {"uid": run, "time": time.time()})
    first.process(
        "descriptor",
        {
            "uid": desc,
            "run_start": run,
            "name": "primary",
            "data_keys": {"pdf_gr": {"dtype": "array", "shape": [50]}},
            "configuration": {"det": {"data": {"pdf_r": r}}},
        },
    )
    for seq in (1, 2, 3):
        first.process("event", event(seq))
    journal.record_published(run, "m", 3)
    assert journal.flush()

    second = DocumentAssembler(source_name="beamline")
    (start,) = second.resume(RunJournal(tmp_path / "journal"))
    assert start.resumed_after == 3
    with caplog.at_level(logging.INFO):
        assert second.process("event", event(3)) == []  # re-sent after the restart
        assert len(second.process("event", event(4))) == 1
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert second.stats.duplicates == 1
    with caplog.at_level(logging.INFO):
        second.process("event", event(4))  # a duplicate within this session
    assert any(
        r.levelno == logging.WARNING and "seen before" in r.getMessage() for r in caplog.records
    )
