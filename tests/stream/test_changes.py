"""Keep-set change detection: a confident, persistent change is reported once; noise and
borderline atoms raise nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from motex_stream.analysis.settings import LiveModelSettings
from motex_stream.explain.confidence import interval
from motex_stream.stream.live.changes import KeepSetChangeDetector
from motex_stream.stream.sim.series import TwoMotifSeries
from tests.stream.results import atom_values
from tests.stream.two_motifs import CROSS_NOISE, CROSSOVER, N_CROSS, PreparedState


def frame(values: np.ndarray, sd: float | np.ndarray = 0.002) -> list[dict]:
    low, high, label = interval(values, np.broadcast_to(sd, values.shape), 0.9)
    return [
        {"atom": i + 1, "value": float(v), "ci_low": float(lo), "ci_high": float(hi), "label": lab}
        for i, (v, lo, hi, lab) in enumerate(zip(values, low, high, label, strict=True))
    ]


def motif(keep: set[int], n: int = 8) -> np.ndarray:
    return np.array([-0.02 if i + 1 in keep else 0.02 for i in range(n)])


def feed(
    det: KeepSetChangeDetector, seq: int, contributions: list[dict], df: list[float] | None = None
) -> dict | None:
    """One frame's entries into the detector; the change it completes as the message says it
    (None: none)."""
    change = det.update(seq, atom_values(contributions), df)
    if change is None:
        return None
    return {
        "frame": change.frame,
        "atoms_gained": list(change.atoms_gained),
        "atoms_lost": list(change.atoms_lost),
        "confidence": change.confidence,
    }


def run(det: KeepSetChangeDetector, frames: list[list[dict]]) -> list[tuple[int, dict]]:
    out = []
    for seq, contributions in enumerate(frames, start=1):
        change = feed(det, seq, contributions)
        if change:
            out.append((seq, change))
    return out


def test_crossover_is_reported_once_at_its_first_frame() -> None:
    rng = np.random.default_rng(0)
    frames = []
    for seq in range(1, 41):
        keep = {1, 2, 3, 4} if seq < 20 else {1, 2, 5, 6}
        frames.append(frame(motif(keep) + rng.normal(0, 0.002, 8)))
    changes = run(KeepSetChangeDetector(persist=3), frames)
    assert len(changes) == 1
    seq, change = changes[0]
    assert seq == 22 and change["frame"] == 20
    assert change["atoms_gained"] == [5, 6] and change["atoms_lost"] == [3, 4]
    assert 0.9 < change["confidence"] <= 1.0


def test_staggered_crossover_is_one_change() -> None:
    """The old atoms go first, the new ones a frame later, through an uncertain frame: one
    change holding both, dated to the first frame that showed any of it."""
    frames = [frame(motif({1, 2, 3, 4})) for _ in range(10)]
    mid = motif({1, 2, 3, 4})
    mid[2:4] = 0.02  # 3, 4 already removed
    mid[4:6] = 0.0  # 5, 6 undecided (uncertain)
    frames.append(frame(mid))  # seq 11
    frames += [frame(motif({1, 2, 5, 6})) for _ in range(10)]  # from seq 12
    changes = run(KeepSetChangeDetector(persist=3), frames)
    assert len(changes) == 1, changes
    seq, change = changes[0]
    assert change["frame"] == 11 and seq == 14
    assert change["atoms_gained"] == [5, 6] and change["atoms_lost"] == [3, 4]


def test_stationary_noise_and_single_flickers_raise_nothing() -> None:
    rng = np.random.default_rng(1)
    det = KeepSetChangeDetector(persist=3)
    for seq in range(1, 101):
        values = motif({1, 2, 3, 4}) + rng.normal(0, 0.002, 8)
        if seq % 17 == 0:  # one odd frame now and then
            values[4] = -0.02
        assert feed(det, seq, frame(values)) is None
    assert det.keep_set == {1, 2, 3, 4}


def test_borderline_atoms_wandering_through_uncertain_raise_nothing() -> None:
    """Atoms whose interval keeps touching 0 (true value one sd below or above it) go keep or
    remove for a few frames in a row now and then: not a change of structure."""
    rng = np.random.default_rng(2)
    det = KeepSetChangeDetector(persist=3)
    base = motif({1, 2, 3, 4})
    base[6], base[7] = -0.002, 0.002  # borderline, sd 0.002
    labels_seen = set()
    for seq in range(1, 301):
        contributions = frame(base + rng.normal(0, 0.002, 8))
        labels_seen.add(contributions[6]["label"])
        assert feed(det, seq, contributions) is None, seq
    assert labels_seen == {"keep", "uncertain", "remove"}


def test_atom_settling_into_keep_joins_a_confident_change() -> None:
    """An atom uncertain from the start that settles into keep with the crossover is gained."""
    first = motif({1, 2})
    first[4] = 0.0  # atom 5 undecided before the change
    frames = [frame(first) for _ in range(6)] + [frame(motif({3, 5})) for _ in range(6)]
    changes = run(KeepSetChangeDetector(persist=3), frames)
    assert len(changes) == 1
    assert changes[0][1]["atoms_gained"] == [3, 5]
    assert changes[0][1]["atoms_lost"] == [1, 2]
    assert changes[0][1]["frame"] == 7


def test_detector_state_round_trips_and_a_frame_fed_twice_counts_once() -> None:
    """The saved state continues exactly (a JSON round trip mid-crossover gives the same
    change); the frame a restart analyses again returns the same answer without counting
    twice; a run played again from its start begins afresh."""
    import json

    rng = np.random.default_rng(3)
    frames = [
        frame(motif({1, 2, 3, 4} if seq < 10 else {1, 2, 5, 6}) + rng.normal(0, 0.002, 8))
        for seq in range(1, 21)
    ]
    expected = run(KeepSetChangeDetector(persist=3), frames)
    assert len(expected) == 1
    det = KeepSetChangeDetector(persist=3)
    out = []
    for seq, contributions in enumerate(frames, start=1):
        if seq == 11:  # restart two frames into the change, from the saved state
            det = KeepSetChangeDetector.from_state(json.loads(json.dumps(det.state())))
            assert feed(det, seq - 1, frames[seq - 2]) is None  # the frame in flight, again
        change = feed(det, seq, contributions)
        assert feed(det, seq, contributions) == change  # fed twice: the same answer
        if change:
            out.append((seq, change))
    assert out == expected
    again = run(det, frames)  # the same run from seq 1: not mistaken for frames after 20
    assert again == expected


def test_persist_must_be_positive() -> None:
    with pytest.raises(ValueError, match="persist"):
        KeepSetChangeDetector(persist=0)


def test_grafana_marks_structure_changes_with_the_counter_the_service_exports() -> None:
    import json
    import re
    from pathlib import Path

    from motex_stream.stream.metrics import StreamMetrics

    dash = Path(__file__).resolve().parents[2] / "deploy/grafana/motex-stream-dashboard.json"
    notes = json.loads(dash.read_text())["annotations"]["list"]
    marks = [a for a in notes if "motex_structure_changes_total" in a.get("expr", "")]
    assert len(marks) == 1 and marks[0]["enable"]
    metrics = StreamMetrics()
    metrics.structure_changes.labels(model="m").inc()
    exported = {s.name for fam in metrics.registry.collect() for s in fam.samples}
    assert set(re.findall(r"motex_[a-z_]+", marks[0]["expr"])) <= exported


# --------------------------------------------------------------- end to end, real analyzer
# The two-motif series (an α-Keggin W12O40 unit, atoms 1-12, and a W13 cluster, atoms 13-25)
# through the real service: batched fits, warm-started XGBoost, TreeSHAP, the live intervals
# with their rotating ensemble, the change detector, published as JSON lines.
# The crossover series (N_CROSS frames, motif B's share passes 0.5 at CROSSOVER, between seq
# 15 and 16) and its prepared model are the session's crossing_state (tests/stream/conftest.py).
N_STATIONARY = 100
NOISE = CROSS_NOISE  # Gaussian noise, 1 % of max |G| per point, as the crossover series


@pytest.fixture(scope="module")
def crossing(crossing_state: PreparedState) -> TwoMotifSeries:
    return crossing_state.series


@pytest.fixture(scope="module")
def stationary(tmp_path_factory):
    from motex_stream.stream.sim.series import two_motif_series

    return two_motif_series(
        tmp_path_factory.mktemp("stationary"), n_frames=N_STATIONARY, noise=NOISE, hold=0.0, seed=1
    )


@pytest.fixture(scope="module")
def live_settings(crossing_state: PreparedState) -> LiveModelSettings:
    return crossing_state.settings


@pytest.fixture(scope="module")
def prepared(crossing_state: PreparedState) -> Path:
    """Prepared once per session on frame 0 (pure motif A, as both series start) and
    persisted; read-only, each test serves a copy."""
    return crossing_state.directory


def serve(series, settings, state_dir, tmp_path) -> tuple[list[dict], float]:
    """Every frame of ``series`` through a fresh service on a copy of the prepared state;
    the published messages and the structure-change counter."""
    import shutil
    import threading

    from motex_stream.stream.live.analyzer import MotexFrameAnalyzer
    from motex_stream.stream.publishers.jsonl import JsonlSink, read_jsonl
    from motex_stream.stream.service import StreamService
    from motex_stream.stream.sources.memory_source import SeriesSource

    state = tmp_path / "state"
    shutil.copytree(state_dir, state)
    analyzer = MotexFrameAnalyzer.prepare(settings, None, state)
    out = tmp_path / "out.jsonl"
    service = StreamService(
        {analyzer.name: analyzer},
        [SeriesSource(series.frame, series.r, series.n_frames)],
        [JsonlSink(out)],
        queue_size=series.n_frames + 8,
    )
    service.run(threading.Event())
    counter = service.metrics.registry.get_sample_value(
        "motex_structure_changes_total", {"model": settings.name}
    )
    return list(read_jsonl(out)), float(counter or 0.0)


@pytest.mark.slow
def test_two_motif_crossover_is_reported_once_near_the_crossover(
    crossing, live_settings, prepared, tmp_path
) -> None:
    messages, counter = serve(crossing, live_settings, prepared, tmp_path)
    assert [m["seq"] for m in messages] == list(range(1, N_CROSS + 1))
    changes = [(m["seq"], m["change"]) for m in messages if m.get("change")]
    published_at, change = changes[0]
    crossover_seq = CROSSOVER + 1  # seq is 1-based
    assert abs(change["frame"] - crossover_seq) <= 2, (change, crossover_seq)
    assert change["frame"] <= published_at <= change["frame"] + 2 * live_settings.change_frames
    # both sides named (issue 20): lost ⊇ most of the old motif, gained ⊇ most of the new
    assert change["atoms_lost"] == list(range(1, 13))  # the Keggin unit's W
    assert set(change["atoms_gained"]) <= set(range(13, 26))  # the W13 cluster
    assert len(change["atoms_gained"]) >= 7, change  # a majority (measured: 8 of 13)
    assert change["confidence"] > 0.9
    # with the offline-width intervals (issue 20; the rotating ensemble's were 0.35-0.7 of
    # them) some W13 atoms settle into keep a few frames later: a later change may only
    # complete the new motif (no atom lost, nothing outside it); the last frame has it all
    for _, later in changes[1:]:
        assert later["atoms_lost"] == [] and set(later["atoms_gained"]) <= set(range(13, 26))
    assert len(changes) <= 2, changes
    assert counter == len(changes)
    # the labels before and after say the same, with confidence
    first, last = messages[0]["contributions"], messages[-1]["contributions"]
    assert [c["label"] for c in first] == ["keep"] * 12 + ["remove"] * 13
    last_labels = [c["label"] for c in last]
    assert last_labels[:12] == ["remove"] * 12
    # the W13 cluster: never remove, a majority keep (offline-width intervals leave some of
    # the 13 uncertain here: 2 with the warm start drawing from xgboost's unseeded engine, 5
    # once every warm-start round was seeded, 3 since a rebuilt frame is analyze's model of
    # it (the drift rebuild at seq 16 serves the rest: 10 of 13 keep on the last frame, 7 on
    # seq 16, 12 on seq 21-22); offline analyze of this frame: 13 keep; issue 20 notes)
    assert "remove" not in last_labels[12:] and last_labels[12:].count("keep") >= 7


@pytest.mark.slow
def test_a_change_in_progress_survives_a_restart(crossing, live_settings, prepared, tmp_path):
    """The analyzer stops two frames into the crossover (nothing confirmed yet) and a new one
    loads the state saved after that frame and analyses the rest. The change is
    reported once, dated as without the restart. Before the detectors' state was saved, the
    restarted analyzer adopted motif B silently as its baseline: no change at all. Since the
    live state saves the interval ensemble and the SHAP of the serving trees (format 5), a
    restart changes nothing: the changes reported are exactly those of an uninterrupted run
    (at 195e1d4 the ensemble was rebuilt from the first frame after the restart: the restarted
    run confirmed a change of 13 atoms gained on seq 20, the uninterrupted run one of 8 on seq
    19 and a second of 2 on seq 24)."""
    import shutil

    from motex_stream.stream.frames import Frame
    from motex_stream.stream.live.analyzer import MotexFrameAnalyzer

    def frames(first: int, last: int) -> list[Frame]:  # seq first..last (1-based)
        return [
            Frame("cross", i + 1, float(i), crossing.r, crossing.frame(i))
            for i in range(first - 1, last)
        ]

    def analyzer(folder: str) -> MotexFrameAnalyzer:
        state = tmp_path / folder
        if not state.exists():
            shutil.copytree(prepared, state)
        found = MotexFrameAnalyzer.prepare(live_settings, None, state)
        # the model's warm start is saved every frame too, so the restarted surrogate is
        # where the first one stopped
        found.save_every = 1
        return found

    stop = int(CROSSOVER) + 3  # seq 17: the flips began on seq 16, none is confirmed yet
    before = analyzer("restarted")
    changes = [(f.seq, before.analyze(f).change) for f in frames(1, stop)]
    assert not any(c for _, c in changes), changes
    after = analyzer("restarted")
    changes += [(f.seq, after.analyze(f).change) for f in frames(stop + 1, N_CROSS)]
    reported = [(seq, c) for seq, c in changes if c]

    whole = analyzer("uninterrupted")
    uninterrupted = [(f.seq, whole.analyze(f).change) for f in frames(1, N_CROSS)]
    assert reported == [(seq, c) for seq, c in uninterrupted if c]

    # and what is reported is the crossover: one change loses motif A, dated near the
    # crossover; a later change may only complete motif B (a borderline W13 atom settling)
    losing = [(seq, c) for seq, c in reported if c.atoms_lost]
    assert len(losing) == 1 and len(reported) <= 2, reported
    change = losing[0][1]
    assert abs(change.frame - (CROSSOVER + 1)) <= 2, change
    assert change.atoms_lost == tuple(range(1, 13))
    gained = {a for _, c in reported for a in c.atoms_gained}
    assert gained <= set(range(13, 26)) and len(change.atoms_gained) >= 7, reported


@pytest.mark.slow
def test_stationary_series_with_the_same_noise_raises_no_change(
    stationary, live_settings, prepared, tmp_path
) -> None:
    messages, counter = serve(stationary, live_settings, prepared, tmp_path)
    assert len(messages) == N_STATIONARY
    assert [m["seq"] for m in messages if m.get("change")] == []
    assert counter == 0.0
    keep = [sum(c["label"] == "keep" for c in m["contributions"][:12]) for m in messages]
    assert min(keep) >= 10, "motif A stays (nearly) all keep throughout"


def test_confidence_inverts_the_t_interval_the_labels_came_from() -> None:
    """A change's confidence is P(value on its new side) under the distribution the interval
    was built with: Student's t at each atom's df (the live intervals' quantile). Reading a t
    interval back with the normal quantile took the SD 1.43x too large (df 3) and then the
    normal tail, which over-reports a confident flip (0.9974 instead of 0.9860 here)."""
    from scipy.stats import t as student_t

    df = np.full(8, 3.0)
    sd = 0.005  # |value| / sd = 4
    det = KeepSetChangeDetector(persist=1)
    frames = []
    for keep in ({1, 2, 3, 4}, {1, 2, 5, 6}):
        values = motif(keep)
        low, high, label = interval(values, np.full(8, sd), 0.9, df=df)
        frames.append(
            [
                {"atom": i + 1, "value": v, "ci_low": lo, "ci_high": hi, "label": lab}
                for i, (v, lo, hi, lab) in enumerate(zip(values, low, high, label, strict=True))
            ]
        )
    assert feed(det, 1, frames[0], df.tolist()) is None
    change = feed(det, 2, frames[1], df.tolist())
    assert change is not None and change["atoms_gained"] == [5, 6]
    assert change["confidence"] == pytest.approx(student_t(3).cdf(0.02 / sd), abs=1e-4)


def test_a_motif_that_fades_through_uncertain_is_named_as_lost() -> None:
    """Issue 20: the old motif's atoms stop being keep without ever going confidently remove
    (their intervals stay across 0) while the new motif's atoms flip to keep. The change must
    name both sides (before: atoms_lost was empty and the dashboard said 'lost: none')."""
    frames = [frame(motif({1, 2, 3, 4})) for _ in range(8)]
    fading = motif({1, 2, 5, 6})
    fading[2:4] = 0.0  # 3, 4: uncertain from now on, never a confident remove
    frames += [frame(fading) for _ in range(8)]
    changes = run(KeepSetChangeDetector(persist=3), frames)
    assert len(changes) == 1, changes
    _, change = changes[0]
    assert change["atoms_gained"] == [5, 6]
    assert change["atoms_lost"] == [3, 4]


def test_faded_keep_atoms_alone_do_not_open_a_change() -> None:
    """Fading out needs a confident flip elsewhere to be reported: a keep atom drifting to
    uncertain on a stationary series is no change of structure."""
    frames = [frame(motif({1, 2, 3, 4})) for _ in range(8)]
    fading = motif({1, 2, 3, 4})
    fading[3] = 0.0
    frames += [frame(fading) for _ in range(8)]
    assert run(KeepSetChangeDetector(persist=3), frames) == []
