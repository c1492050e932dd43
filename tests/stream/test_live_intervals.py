"""Live intervals: the ensemble of the serving surrogate is built on the frame that surrogate
was (re)built on, with the offline recipe, widens the sampling-error interval, and gives the
same numbers for the same frames."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from motex_stream.analysis import steps
from motex_stream.analysis.settings import LiveModelSettings
from motex_stream.explain.contributions import atom_contributions
from motex_stream.model.hyperparameters import Hyperparameters
from motex_stream.model.search import search_trace
from motex_stream.model.training import TrainedModel
from motex_stream.stream.frames import Frame
from motex_stream.stream.live.analyzer import MotexFrameAnalyzer
from motex_stream.stream.live.live_intervals import LiveEnsemble, member_params
from motex_stream.stream.sim.series import two_motif_series
from tests.stream.results import entries
from tests.stream.two_motifs import live_settings, prepare_on_first_frame


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    return two_motif_series(tmp_path_factory.mktemp("series"), n_frames=4, noise=0.01)


@pytest.fixture(scope="module")
def settings(series) -> LiveModelSettings:
    return live_settings(
        series,
        catalogue_size=400,
        refit=400,
        rounds=5,
        max_trees=40,
        search_calls=2,
        cv_folds=2,
        ci_rows=200,
    )


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory, series, settings):
    return prepare_on_first_frame(settings, series, tmp_path_factory.mktemp("state"))


def fresh(settings, state_dir, tmp_path, **changes) -> MotexFrameAnalyzer:
    copy = tmp_path / f"state-{len(list(tmp_path.iterdir()))}"
    shutil.copytree(state_dir, copy)
    return MotexFrameAnalyzer.prepare(settings.updated(**changes), None, copy)


def run(analyzer: MotexFrameAnalyzer, series) -> list[list[dict]]:
    return [
        entries(
            analyzer.analyze(Frame("run", i + 1, float(i), series.r, series.frame(i))).contributions
        )
        for i in range(series.n_frames)
    ]


def half_widths(frames: list[list[dict]]) -> np.ndarray:
    return np.array([[c["ci_high"] - c["ci_low"] for c in f] for f in frames]) / 2


def test_ensemble_widens_the_sampling_error_interval_and_is_deterministic(
    series, settings, state_dir, tmp_path
) -> None:
    plain = run(fresh(settings, state_dir, tmp_path, ci_models=0), series)
    a = run(fresh(settings, state_dir, tmp_path, ci_models=4), series)
    b = run(fresh(settings, state_dir, tmp_path, ci_models=4), series)
    # the values are the main model's either way: the ensemble only widens the interval
    values = np.array([[c["value"] for c in f] for f in a])
    np.testing.assert_array_equal(values, [[c["value"] for c in f] for f in plain])
    wide, narrow = half_widths(a), half_widths(plain)
    assert np.all(wide >= narrow - 1e-15)
    used = narrow > 0  # atoms no tree splits on have no SHAP, hence no sampling error
    assert np.median(wide[used] / narrow[used]) > 1.5, "the model's spread dominates"
    np.testing.assert_array_equal(wide, half_widths(b))  # seeded: same frames, same intervals
    for f in a:
        for c in f:
            assert c["ci_low"] <= c["value"] <= c["ci_high"]


def test_the_ensemble_belongs_to_the_serving_model_and_one_frame(
    series, settings, state_dir, tmp_path
) -> None:
    """Issue 20: the members once rotated and warm-started across frames and rebuilds, so on
    a long series they carried earlier frames (intervals ~4x the offline width). Now the SD
    of a surrogate generation is the offline ensemble's SD of the one frame that surrogate
    was built on: ``steps.intervals`` of those fits gives the same numbers, later frames of
    the same surrogate do not change it, and the frame a surrogate is rebuilt on (in line)
    gives the new generation's members from its fits alone."""
    analyzer = fresh(settings, state_dir, tmp_path)
    cat = analyzer.catalogue
    params = member_params(analyzer.search, analyzer.surrogate.params, 3)
    ids = np.arange(len(cat))
    frames = [analyzer.surrogate.predict(cat) * (1 + 0.1 * k) for k in range(3)]
    ens = LiveEnsemble(cat, params, rows=150, seed=settings.seed)
    sd0 = ens.update(0, frames[0], ids)
    assert np.all(np.isfinite(sd0)) and np.all(sd0 > 0)
    trained = TrainedModel(
        analyzer.surrogate.booster,
        analyzer.surrogate.params,
        0.0,
        0.0,
        0,
        0,
        0,
        search_history=analyzer.search,
    )
    contributions = atom_contributions(analyzer._shap.values, analyzer._explained_masks)
    offline = steps.intervals(
        trained, cat, frames[0], contributions, settings.updated(ci_models=3, ci_rows=150)
    )
    np.testing.assert_allclose(sd0, offline.ensemble_sd, rtol=1e-12)
    # a later frame of the same surrogate: the same SD (no per-frame member history)
    np.testing.assert_array_equal(ens.update(0, frames[1], ids), sd0)
    # the surrogate is rebuilt on frame 2 (generation 1): its members come from frame 2's
    # fits alone, as a fresh ensemble's would, and serve the generation's later frames
    sd1 = ens.update(1, frames[2], ids)
    alone = LiveEnsemble(cat, params, rows=150, seed=settings.seed)
    np.testing.assert_array_equal(sd1, alone.update(1, frames[2], ids))
    assert not np.array_equal(sd1, sd0)
    np.testing.assert_array_equal(ens.update(1, frames[0], ids), sd1)


def test_members_are_the_offline_ensembles_models() -> None:
    """The live members use the search's points by CV MAE, best first, in turn, as
    ``steps.intervals`` does; no search trace: the searched model."""
    trace = [
        {**Hyperparameters(max_depth=d, n_estimators=10 * d).to_dict(), "cv_mae": m}
        for d, m in [(2, 0.3), (3, 0.1), (4, 0.2)]
    ]
    depths = [p.max_depth for p in member_params(search_trace(trace), Hyperparameters(), 4)]
    assert depths == [3, 4, 2, 3]
    best = Hyperparameters(max_depth=5)
    assert [p.max_depth for p in member_params([], best, 2)] == [5, 5]


def test_an_ensemble_needs_two_members(series, settings, state_dir, tmp_path) -> None:
    analyzer = fresh(settings, state_dir, tmp_path)
    with pytest.raises(ValueError, match="at least 2"):
        LiveEnsemble(analyzer.catalogue, [Hyperparameters()], 100, 0)


def test_live_explains_a_seeded_subsample_above_explain_rows(
    series, settings, state_dir, tmp_path
) -> None:
    """A live catalogue larger than ``explain_rows`` is explained on the seeded subsample
    ``analyze`` would take (before: the setting was accepted and ignored, every motif was
    explained every frame): values move by about their sampling error, which the interval
    carries, and the ensemble draws its rows from the explained ones."""
    whole = run(fresh(settings, state_dir, tmp_path, ci_models=0), series)
    sub_analyzer = fresh(settings, state_dir, tmp_path, ci_models=0, explain_rows=150)
    sub = run(sub_analyzer, series)
    assert sub_analyzer._shap.X.shape[0] == 150  # SHAP's rows per frame: the bound
    again = run(fresh(settings, state_dir, tmp_path, ci_models=0, explain_rows=150), series)
    values = np.array([[c["value"] for c in f] for f in sub])
    np.testing.assert_array_equal(values, [[c["value"] for c in f] for f in again])
    whole_values = np.array([[c["value"] for c in f] for f in whole])
    assert not np.array_equal(values, whole_values)
    se = half_widths(sub) / 1.6448536269514722  # ci_models=0: normal interval at 90 %
    used = se > 0
    z = np.abs(values - whole_values)[used] / se[used]
    assert np.median(z) < 1.5 and z.max() < 5, z
    assert np.all(half_widths(sub)[used] >= half_widths(whole)[used] * 0.9)
    with_ensemble = run(fresh(settings, state_dir, tmp_path, ci_models=3, explain_rows=150), series)
    for f in with_ensemble:
        for c in f:
            assert c["ci_low"] <= c["value"] <= c["ci_high"]
