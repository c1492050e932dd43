"""Per-run state of the live analyzer (run settings, change detector, structure sent): one
bounded structure in which a live run never loses its state to the runs that pass by."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from motex_stream.stream.frames import Frame
from motex_stream.stream.live.analyzer_protocol import AtomValues
from tests.stream.two_motifs import PreparedState


def labelled(n: int, keep: set[int]) -> AtomValues:
    """Confident labels: atoms in ``keep`` well below 0, the others well above."""
    value = np.array([-0.02 if a in keep else 0.02 for a in range(1, n + 1)])
    return AtomValues(
        atom=np.arange(1, n + 1),
        element=["W"] * n,
        value=value,
        spread=np.full(n, 0.002),
        interval=(value - 0.004, value + 0.004),
        label=["keep" if a in keep else "remove" for a in range(1, n + 1)],
    )


def test_a_live_run_keeps_its_change_in_progress_while_many_runs_pass(
    small_state: PreparedState, tmp_path: Path
) -> None:
    """A change half confirmed in a live run is still reported after more than 64 other runs
    were seen meanwhile (one frame each, 40 between two frames of the live run). Before: the
    per-run dicts were cleared when the 65th run came, and the live run's detector started
    again from nothing."""
    analyzer = small_state.analyzer(tmp_path / "state")
    series = small_state.series
    n = analyzer.catalogue.shape[1]

    def frame(run: str, seq: int) -> Frame:
        return Frame(run, seq, float(seq), series.r, series.frame(0))

    settings = analyzer.run_settings(frame("live", 1))
    persist = settings.change_frames
    before, after = labelled(n, {1, 2}), labelled(n, {3, 4})
    seq = 0
    for _ in range(persist):  # the baseline: adopted silently
        seq += 1
        assert analyzer._change(frame("live", seq), settings, before, None) is None
    others = 0

    def other_runs(n: int) -> None:  # runs that pass by, one frame each
        nonlocal others
        for _ in range(n):
            others += 1
            analyzer._change(frame(f"other-{others}", 1), settings, before, None)

    for _ in range(persist - 1):  # the flip, one frame short of confirmed
        other_runs(40)
        seq += 1
        assert analyzer._change(frame("live", seq), settings, after, None) is None
    other_runs(40)
    assert others > 64
    seq += 1
    change = analyzer._change(frame("live", seq), settings, after, None)
    assert change is not None, "the live run's change in progress was dropped"
    assert (change.frame, change.atoms_gained, change.atoms_lost) == (persist + 1, (3, 4), (1, 2))


def test_runs_are_bounded_and_the_least_recently_seen_goes_first() -> None:
    from motex_stream.stream.live.runs import LiveRuns

    runs = LiveRuns(capacity=3)
    for name in ("a", "b", "c"):
        runs[name].described = True
    runs["a"]  # seen again: now the most recent
    runs["d"]  # one too many: b, the least recently seen, goes
    assert len(runs) == 3 and "b" not in runs and "a" in runs and runs["a"].described
    assert not runs["b"].described  # a run seen again after it went starts afresh
