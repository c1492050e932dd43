"""The run journal: open runs survive a restart; a broken journal file is never fatal."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from motex_stream.stream.journal import RunJournal


def _start(uid: str) -> dict:
    return {"uid": uid, "time": 1.0, "sample": "keggin"}


def _descriptor(uid: str, run: str) -> dict:
    r = np.linspace(1.0, 20.0, 5)
    return {
        "uid": uid,
        "run_start": run,
        "name": "primary",
        "data_keys": {"pdf_gr": {"dtype": "array", "shape": [5]}},
        "configuration": {"det": {"data": {"pdf_r": r}}},
    }


def test_open_run_round_trip(tmp_path: Path) -> None:
    j = RunJournal(tmp_path)
    j.record_start("beamline", _start("run-1"))
    j.record_descriptor("run-1", _descriptor("d-1", "run-1"))
    j.record_published("run-1", "keggin", 3)
    j.record_published("run-1", "keggin", 2)  # never goes back
    assert j.flush()
    again = RunJournal(tmp_path)  # a restarted process
    (run,) = again.open_runs("beamline")
    assert (run.uid, run.model, run.last_seq) == ("run-1", "keggin", 3)
    assert run.start["sample"] == "keggin"
    assert run.descriptors[0]["configuration"]["det"]["data"]["pdf_r"] == list(
        np.linspace(1.0, 20.0, 5)
    )
    assert again.open_runs("another-source") == []
    again.close_run("run-1")
    assert RunJournal(tmp_path).open_runs() == []


def test_uids_cannot_escape_the_folder(tmp_path: Path) -> None:
    j = RunJournal(tmp_path / "runs")
    j.record_start("s", _start("../../../etc/passwd"))
    assert j.flush()
    assert [p.parent for p in (tmp_path / "runs").rglob("start.json")] != []
    assert not (tmp_path / "etc").exists()
    assert RunJournal(tmp_path / "runs").open_runs()[0].uid == "../../../etc/passwd"


def test_broken_files_are_moved_aside_and_leftovers_removed(tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    j = RunJournal(tmp_path)
    for uid in ("good", "bad-progress", "bad-start"):
        j.record_start("s", _start(uid))
    j.record_published("good", "m", 1)
    assert j.flush()
    (j._run_dir("good") / "progress.json.tmp").write_text("{half")
    (j._run_dir("bad-progress") / "progress.json").write_text("[1, 2")
    (j._run_dir("bad-start") / "start.json").write_text('"a string"')
    with caplog.at_level(logging.ERROR):
        runs = RunJournal(tmp_path).open_runs()
    assert [r.uid for r in runs] == ["good"]
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 2
    assert len(list(tmp_path.glob("*.bad"))) == 2
    assert not list(tmp_path.rglob("*.tmp"))


def test_runs_whose_stop_never_came_are_bounded(tmp_path: Path) -> None:
    j = RunJournal(tmp_path, max_open_runs=3)
    for i in range(6):
        j.record_start("s", _start(f"run-{i}"))
    assert len(j.open_runs()) == 3
