"""Live intervals: the rotating surrogate ensemble refreshes one member per frame, widens the
sampling-error interval, and gives the same numbers for the same frames."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from motex_stream.analysis.settings import LiveModelSettings
from motex_stream.explain.confidence import sampling_error
from motex_stream.explain.contributions import atom_contributions
from motex_stream.stream.analyzer import MotexFrameAnalyzer
from motex_stream.stream.frames import Frame
from motex_stream.stream.live_intervals import RotatingEnsemble
from motex_stream.stream.series import two_motif_series
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
        analyzer.analyze(Frame("run", i + 1, float(i), series.r, series.frame(i))).contributions
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


def test_one_member_per_frame_and_a_rebuild_after_the_main_model_is_rebuilt(
    series, settings, state_dir, tmp_path
) -> None:
    analyzer = fresh(settings, state_dir, tmp_path)
    surrogate = analyzer.surrogate
    features = analyzer._features
    ens = RotatingEnsemble(features, analyzer.catalogue, members=3, rows=150, seed=7)
    assert len(ens.subset) == 150 and len(set(ens.subset)) == 150
    shap = analyzer._shap.update(surrogate.booster, generation=surrogate.generation)
    y = surrogate.predict(analyzer.catalogue)
    sd = ens.update(surrogate, shap, features, y)
    assert [m.refreshed for m in ens.members] == [0, 0, 0]  # the first frame builds all
    assert np.all(np.isfinite(sd)) and np.all(sd > 0)
    ens.update(surrogate, shap, features, y)
    ens.update(surrogate, shap, features, y)
    assert sorted(m.refreshed for m in ens.members) == [0, 1, 2]  # one per frame, in turn
    trees = [m.booster.num_boosted_rounds() for m in ens.members]
    surrogate.generation += 1  # the main model was rebuilt: the next member starts afresh
    ens.update(surrogate, shap, features, y)
    k = 3 % 3
    assert ens.members[k].generation == surrogate.generation
    assert ens.members[k].booster.num_boosted_rounds() <= trees[k]
    # the deviation is taken against the main model's values on the same subset
    main = atom_contributions(shap[ens.subset], analyzer.catalogue[ens.subset]).value
    assert ens.members[k].deviation.shape == main.shape
    assert np.all(np.isfinite(sampling_error(atom_contributions(shap, analyzer.catalogue))))


def test_an_ensemble_needs_two_members(series, settings, state_dir, tmp_path) -> None:
    analyzer = fresh(settings, state_dir, tmp_path)
    with pytest.raises(ValueError, match="at least 2"):
        RotatingEnsemble(analyzer._features, analyzer.catalogue, members=1, rows=100, seed=0)


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
