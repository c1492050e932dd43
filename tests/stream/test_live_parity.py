"""Issue 20: a live frame's answer is the offline ``analyze`` of that frame, across rebuilds,
and symmetry-equivalent atoms get values that agree within their intervals, offline and live.

The live analyzer warm-starts its surrogate, rebuilds it in line at the tree cap, on drift or
every ``rebuild_every`` frames, and keeps a live interval ensemble; none of it may change the
answer. A rebuilt frame is the offline answer given the live search exactly (by
construction); every frame is held to the offline answer with its own search within the
intervals.
Reference: ``run_analysis`` of the frame written as a ``.gr`` file, with the same catalogue,
settings and seed (the offline-only refinement by direct fits off, as live has none).
The numbers on a longer series are in docs/results.md (benchmarks/bench_live_parity.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from motex_stream.analysis.pipeline import run_analysis
from motex_stream.analysis.settings import LiveModelSettings, ModelSettings
from motex_stream.analysis.steps import default_pdf_settings
from motex_stream.pdf.realspace import realspace_pdf
from motex_stream.stream.frames import Frame
from motex_stream.stream.live.analyzer import MotexFrameAnalyzer
from motex_stream.stream.live.analyzer_protocol import AtomValues
from motex_stream.stream.messages import build_message, validate_message
from motex_stream.stream.sim.series import two_motif_series
from motex_stream.structure.starting_model import load_starting_model
from motex_stream.structure.symmetry import equivalence_classes
from tests.symmetric_models import c60, cuboctahedron, keggin_unit

SMALL: dict[str, Any] = {
    "catalogue_size": 600,
    "refit": 600,
    "rounds": 10,
    "max_trees": 40,  # below the searched model: raised to it + 2 frames, never squeezed
    "search_calls": 4,
    "cv_folds": 2,
    "ci_models": 4,
    "ci_rows": 600,
}


def offline_settings(live: LiveModelSettings) -> ModelSettings:
    shared = {k: v for k, v in live.model_dump().items() if k in ModelSettings.model_fields}
    shared["refine_fits"] = live.frame_refine_fits  # the live counterpart (default 0: off)
    return ModelSettings(**shared)


def offline(path: Path, r: np.ndarray, g: np.ndarray, settings: ModelSettings, search=None):  # type: ignore[no-untyped-def]
    path.write_text("".join(f"{a:.6f} {b:.10g}\n" for a, b in zip(r, g, strict=True)))
    return run_analysis(path, settings, search=search)


def live_arrays(contributions: AtomValues) -> tuple[np.ndarray, np.ndarray, list[str]]:
    assert contributions.interval is not None and contributions.label is not None
    low, high = contributions.interval
    return contributions.value, (high - low) / 2, list(contributions.label)


def test_analyze_given_its_own_search_is_analyze(keggin_gr: Path) -> None:
    """``run_analysis(..., search=)``, the offline half of a live rebuild (issue 20): given the
    search a run made, ``analyze`` trains the same model and gives the same values, intervals
    and labels, so live-vs-given differences are never the training protocol's, and
    own-vs-given differences are the search's alone."""
    settings = ModelSettings(
        starting_model=keggin_gr.parent / "109725.xyz",
        catalogue_size=400,
        search_calls=3,
        cv_folds=2,
        ci_models=2,
        ci_rows=400,
        confirm_contexts=8,
        refine_fits=0,
    )
    first = run_analysis(keggin_gr, settings)
    again = run_analysis(keggin_gr, settings, search=first.settings["search_trace"])
    assert again.settings["search_given"] and not first.settings["search_given"]
    assert again.settings["hyperparameters"] == first.settings["hyperparameters"]
    # the points the model and its members use, scored again on the same fits: the same scores
    used = sorted(first.settings["search_trace"], key=lambda h: h["cv_mae"])[: settings.ci_models]
    assert again.settings["search_trace"] == used
    np.testing.assert_array_equal(again.contributions.value, first.contributions.value)
    np.testing.assert_array_equal(again.intervals.low, first.intervals.low)
    np.testing.assert_array_equal(again.intervals.high, first.intervals.high)
    assert list(again.intervals.label) == list(first.intervals.label)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("every", "n_frames", "rebuilds", "search"),
    [
        # frame 3 at the cap, 4-5 drift (measured)
        pytest.param(0, 5, 2, "rescore", id="cap-and-drift"),
        pytest.param(1, 2, 2, "rescore", id="rebuild-every-frame"),
        pytest.param(1, 3, 3, "search", id="own-search-every-frame"),
    ],
)
def test_a_rebuilt_frame_is_the_offline_answer_of_that_frame(
    every: int, n_frames: int, rebuilds: int, search: str, tmp_path: Path
) -> None:
    """Issue 20, by construction: a frame the live surrogate is rebuilt on (the tree cap
    reached, drift, or ``rebuild_every``) is answered by the model ``analyze`` trains on that
    frame given the live search (``run_analysis(..., search=analyzer.search)``): the same
    values, intervals and labels, across every rebuild of a crossover. Before: a rebuild
    trained the warm-start protocol's model (the frame's 80 % split, the frame's seed) in a
    background thread and served it from the next frame on, under that frame's warm-start
    trees, so no frame had its own offline model (benchmark: 80-88 % of the labels). Every
    message says ``rebuild_started`` false: no rebuild is left for a later frame.
    With ``rebuild_search`` "search" a rebuild runs the frame's own search, so every frame is
    ``analyze`` of that frame with its own search, the issue's reference, bit for bit
    (before: only given the live search; one crossover frame per benchmark series under
    90 % of the labels, docs/results.md)."""
    crossover = 1 if search == "search" else 3  # own search: frames 1-3 straddle it
    series = two_motif_series(
        tmp_path / "s", n_frames=n_frames, noise=0.01, crossover=crossover, width=0.7
    )
    live = LiveModelSettings(
        name="parity",
        starting_model=str(series.model_path),
        rebuild_every=every,
        rebuild_search=search,
        **SMALL,
    )
    analyzer = MotexFrameAnalyzer.prepare(
        live, Frame("ref", 1, 0.0, series.r, series.frame(0)), tmp_path / "state"
    )
    checked = []
    for i in range(series.n_frames):
        g = series.frame(i)
        res = analyzer.analyze(Frame("run", i + 1, float(i), series.r, g))
        # rebuilds are in line: no frame starts one for a later frame (a wire field kept)
        assert res.model_quality.rebuild_started is False
        if not res.model_quality.rebuilt:
            continue
        assert res.n_refit == live.catalogue_size  # every motif refitted, as analyze
        given = None if search == "search" else analyzer.search
        off = offline(tmp_path / f"f{i}.gr", series.r, g, offline_settings(live), given)
        assert off.settings["search_given"] is (given is not None)
        value, _, labels = live_arrays(res.contributions)
        assert labels == list(off.intervals.label), i + 1
        np.testing.assert_allclose(value, off.contributions.value, rtol=0, atol=1e-9)
        low, high = res.contributions.interval
        np.testing.assert_allclose(low, off.intervals.low, rtol=0, atol=1e-9)
        np.testing.assert_allclose(high, off.intervals.high, rtol=0, atol=1e-9)
        checked.append(i + 1)
    assert len(checked) >= rebuilds, checked  # each rebuilt frame the offline answer


@pytest.mark.slow
def test_live_refinement_is_the_offline_refinement_of_the_frame(tmp_path: Path) -> None:
    """Issue 21 item 2, live: with ``refine_fits`` set, each frame's motif is refined by direct
    fits by analyze's own steps, and a rebuilt frame's refined motif, its Rwp, its toggles and
    the labels they check are analyze's of that frame (given the live search). Off by default
    live: without it no frame carries a refined motif and the labels are unchanged."""
    series = two_motif_series(tmp_path / "s", n_frames=2, noise=0.01, crossover=1, width=0.7)
    live = LiveModelSettings(
        name="refined",
        starting_model=str(series.model_path),
        rebuild_every=1,
        frame_refine_fits=20_000,
        **SMALL,
    )
    analyzer = MotexFrameAnalyzer.prepare(
        live, Frame("ref", 1, 0.0, series.r, series.frame(0)), tmp_path / "state"
    )
    assert LiveModelSettings(name="x", starting_model="m.xyz").frame_refine_fits == 0
    for i in range(series.n_frames):
        g = series.frame(i)
        res = analyzer.analyze(Frame("run", i + 1, float(i), series.r, g))
        assert res.model_quality.rebuilt
        off = offline(tmp_path / f"f{i}.gr", series.r, g, offline_settings(live), analyzer.search)
        assert off.refinement is not None
        refined = res.extra["refined"]
        assert refined["atoms_kept"] == [analyzer._atoms[k] for k in off.refinement.atoms()]
        # the offline frame is read back from a .gr file written with 10 digits
        assert refined["rwp"] == pytest.approx(off.refinement.rwp, abs=1e-8)
        assert refined["n_fits"] > 0
        np.testing.assert_allclose(refined["keep_effect"], off.refinement.keep_effect, atol=1e-8)
        assert list(res.contributions.label) == list(off.intervals.label), i + 1
        # the message carries it as JSON (NaN: null)
        message = validate_message(build_message(res, Frame("run", i + 1, 1.0 + i, series.r, g)))
        assert message["extra"]["refined"]["atoms_kept"] == refined["atoms_kept"]


@pytest.mark.slow
def test_live_frames_give_the_offline_answer_across_rebuilds(tmp_path: Path) -> None:
    """Frames 1-4 of a crossover (x_B 0.05, 0.27, 0.73, 0.95): the crossover frames drift
    and are rebuilt in line, the cap rebuilds every third frame. Every frame: Pearson ≥ 0.95
    against offline, every live value within 1.5 combined half-widths of the offline one
    (|Δ| ≤ 1.5 √(hw_live² + hw_offline²); the largest of 25 atoms × 4 frames was 1.01), and no
    atom keep on one side and remove on the other.
    (Label *equality* is not asserted: at this catalogue size offline does not reproduce its
    own labels with another seed, 52 % on the benchmark; docs/results.md.) Before: the
    prepared model was squeezed on frame 1 (max_trees 40 → 13 trees at a 3× learning rate),
    the crossover frame was answered by the stale model (Pearson -0.16 on the benchmark),
    and the rotating members carried earlier frames."""
    series = two_motif_series(tmp_path / "s", n_frames=4, noise=0.01, crossover=1.5, width=0.5)
    live = LiveModelSettings(name="parity", starting_model=str(series.model_path), **SMALL)
    analyzer = MotexFrameAnalyzer.prepare(
        live, Frame("ref", 1, 0.0, series.r, series.frame(0)), tmp_path / "state"
    )
    rebuilt = []
    for i in range(series.n_frames):
        g = series.frame(i)
        res = analyzer.analyze(Frame("run", i + 1, float(i), series.r, g))
        off = offline(tmp_path / f"f{i}.gr", series.r, g, offline_settings(live))
        value, half, labels = live_arrays(res.contributions)
        ref = off.contributions.value
        pearson = np.corrcoef(value, ref)[0, 1]
        assert pearson >= 0.95, (i + 1, pearson)
        half_off = (off.intervals.high - off.intervals.low) / 2
        z = np.abs(value - ref) / np.sqrt(half**2 + half_off**2)
        assert z.max() <= 1.5, (i + 1, z.max())  # the max of 25 atoms (measured 1.01)
        pairs = set(zip(labels, off.intervals.label, strict=True))
        assert not pairs & {("keep", "remove"), ("remove", "keep")}, (i + 1, pairs)
        rebuilt.append(res.model_quality.rebuilt)
        assert (res.model_quality.n_trees or 0) <= analyzer.surrogate.max_trees
    assert any(rebuilt), "no rebuild in the series: the test would not test one"


def symmetric_frames(model_path: Path, element: str, n: int) -> tuple[np.ndarray, list]:
    """The full model's own PDF (every atom belongs) with 1 % seeded noise, ``n`` frames."""
    model = load_starting_model(model_path, [element], 2.5)
    r = np.round(np.arange(100, 1501) * 0.01, 10)
    r_calc, g = realspace_pdf(list(model.symbols), model.positions, default_pdf_settings(r))
    g = np.interp(r, r_calc, g)
    frames = []
    for k in range(n):
        noise = np.random.default_rng((7, k)).standard_normal(g.size)
        frames.append(g + 0.01 * np.abs(g).max() * noise)
    return r, frames


def assert_sites_agree(
    sites: list[list[int]], value: np.ndarray, half: np.ndarray, labels: list[str], where: str
) -> None:
    """Equivalent atoms: the spread of their values is within their intervals (max − min ≤
    the median interval width of the site), and no site is both keep and remove."""
    for site in (s for s in sites if len(s) > 1):
        v, h = value[site], half[site]
        assert np.ptp(v) <= 2 * np.median(h), (where, site, v, h)
        assert not {"keep", "remove"} <= {labels[k] for k in site}, (where, site, labels)


#: the small symmetric models: SMALL's settings on a 600-motif catalogue
SMALL_SYMMETRIC = {**SMALL, "catalogue_size": 600, "refit": 600, "ci_rows": 600}


@pytest.mark.parametrize(
    ("writer", "element", "size"),
    [
        pytest.param(cuboctahedron, "W", SMALL_SYMMETRIC, marks=pytest.mark.slow),
        pytest.param(keggin_unit, "W", SMALL_SYMMETRIC, marks=pytest.mark.slow),
        # 60 equivalent atoms need analyze's own settings (10,000 motifs, search 12 x 5):
        # with SMALL's search on 3,000 motifs the offline values spread over 0.008, 2.9x
        # their median interval width (1.6x at 10,000 and 1.7x at 30,000 motifs: the small
        # search, not the catalogue, was short); at the defaults 0.0039 against 0.0043 (0.91)
        pytest.param(c60, "C", {"catalogue_size": 10_000}, marks=pytest.mark.slow),
    ],
)
def test_symmetric_atoms_agree_within_their_intervals(writer, element, size, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Issue 20 (make demo: after a rebuild one W13 vertex sat at -0.18, the 11 others at
    -0.08…-0.12, labelled differently, frozen there by later warm starts). Offline and live,
    with a rebuild on every live frame (the drift reference forced to 0), the sites of
    equal sorted distance lists agree within their intervals."""
    path = writer(tmp_path)
    r, frames = symmetric_frames(path, element, 3)
    live = LiveModelSettings(name="symmetric", starting_model=str(path), permute=[element], **size)
    analyzer = MotexFrameAnalyzer.prepare(live, Frame("ref", 1, 0.0, r, frames[0]), None)
    model = load_starting_model(path, [element], 2.5)
    sites = equivalence_classes(model, cutoff=analyzer.engine.grid.pair_dmax)
    assert max(len(s) for s in sites) >= 4
    off = offline(tmp_path / "f.gr", r, frames[0], offline_settings(live))
    half = (off.intervals.high - off.intervals.low) / 2
    assert_sites_agree(sites, off.contributions.value, half, off.intervals.label, "offline")
    analyzer.surrogate.reference_mae = 0.0  # every frame drifts: rebuilt in line
    for k, g in enumerate(frames):
        res = analyzer.analyze(Frame("run", k + 1, float(k), r, g))
        assert res.model_quality.rebuilt
        if k == 0:
            described = [[a - 1 for a in s] for s in res.structure.equivalent]
            assert described == [s for s in sites if len(s) > 1]
        assert_sites_agree(sites, *live_arrays(res.contributions), f"live frame {k + 1}")


@pytest.mark.slow
def test_replay_with_own_search_rebuilds_is_analyze_of_each_frame(tmp_path: Path) -> None:
    """Issue 20 at the user's level: ``motex-stream replay --rebuild-every 1 --rebuild-search
    search`` over a crossover publishes, for every frame, the values, intervals and labels
    that ``motex-stream analyze`` of that frame's file prints into contributions.csv, with
    the same flags (both commands as a user runs them, in their own processes)."""
    import csv
    import json
    import subprocess
    import sys

    series = two_motif_series(tmp_path / "s", n_frames=2, noise=0.01, crossover=0.5, width=0.7)
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(series.n_frames):
        np.savetxt(frames / f"frame_{i + 1}.gr", np.c_[series.r, series.frame(i)])
    flags = [
        "--model", str(series.model_path), "--catalogue", "400", "--search-calls", "4",
        "--cv-folds", "2", "--ci-models", "2", "--ci-rows", "400", "--confirm-contexts", "8",
        "--refine-fits", "0",
    ]  # fmt: skip
    cli = [sys.executable, "-m", "motex_stream"]
    out = tmp_path / "replay.jsonl"
    subprocess.run(
        [*cli, "replay", "--frames", str(frames / "frame_*.gr"), *flags, "--rebuild-every", "1",
         "--rebuild-search", "search", "--out", str(out)],
        check=True, capture_output=True,
    )  # fmt: skip
    messages = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(messages) == series.n_frames
    keeps = []
    for i, message in enumerate(messages):
        assert message["model_quality"]["rebuilt"], i + 1
        folder = tmp_path / f"analyze-{i + 1}"
        subprocess.run(
            [*cli, "analyze", str(frames / f"frame_{i + 1}.gr"), *flags, "--out", str(folder)],
            check=True, capture_output=True,
        )  # fmt: skip
        with open(folder / "contributions.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        live = message["contributions"]
        assert [c["atom"] for c in live] == [int(r["atom"]) for r in rows]
        assert [c["label"] for c in live] == [r["label"] for r in rows], i + 1
        columns = {"value": "contribution", "ci_low": "ci_low", "ci_high": "ci_high"}
        for key, column in columns.items():
            # contributions.csv keeps 8 significant digits
            np.testing.assert_allclose(
                [c[key] for c in live], [float(r[column]) for r in rows], rtol=1e-7, atol=1e-10
            )
        keeps.append({c["atom"] for c in live if c["label"] == "keep"})
    assert keeps[0] != keeps[-1]  # the crossover moved the verdict, and both agreed on it
