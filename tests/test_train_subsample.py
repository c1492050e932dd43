"""Training the surrogate with bounded memory (issue 13): quantised training matrices from
compact integer features, and a seeded training subsample above ``train_rows``.

Why it matters: on a 10^6-motif catalogue the surrogate's training, not the fits nor SHAP,
set the peak memory (1.9 GB: the float32 features copied into five CV folds' and the final
fit's ``DMatrix``), and at 10^7 motifs it would not finish in an afternoon.
"""

from __future__ import annotations

import numpy as np
import pytest
import xgboost as xgb

from motex_stream.analysis import steps
from motex_stream.analysis.settings import TRAIN_ROWS, ModelSettings
from motex_stream.catalogue import random_catalogue
from motex_stream.model.features import features, quantised, training_features
from motex_stream.model.hyperparameters import Hyperparameters
from motex_stream.model.training import train
from tests.conftest import KEGGIN

N_MOTIFS = 6_000
ROWS = 1_500


@pytest.fixture(scope="module")
def fitted(fitted_random_109725):
    """6,000 random 109725 motifs fitted to the golden G(r)."""
    return fitted_random_109725(N_MOTIFS, 11)


def settings(**changes) -> ModelSettings:
    base = {"catalogue_size": N_MOTIFS, "search_calls": 2, "cv_folds": 3}
    return ModelSettings(starting_model=KEGGIN / "109725.xyz", **{**base, **changes})


def test_training_features_are_the_features_as_small_integers() -> None:
    masks = random_catalogue(24, 500, 1)
    compact = training_features(masks)
    assert compact.dtype == np.uint8
    np.testing.assert_array_equal(compact, features(masks))
    wide = random_catalogue(300, 50, 1)  # sizes above 255 need two bytes
    assert training_features(wide).dtype == np.uint16
    np.testing.assert_array_equal(training_features(wide), features(wide))


def test_quantised_matrix_grows_the_same_trees_as_a_float_dmatrix(fitted) -> None:
    """The quantised, integer path trains byte-identical boosters (row and column sampling
    included), so nothing the paper checks can move."""
    masks, rwp = fitted
    params = Hyperparameters(max_depth=6, subsample=0.7, colsample_bytree=0.8).to_xgb_params(seed=3)
    old = xgb.train(params, xgb.DMatrix(features(masks), label=rwp), 60)
    new = xgb.train(params, quantised(training_features(masks), rwp), 60)
    assert old.save_raw() == new.save_raw()


def test_train_sample_is_seeded_sorted_and_its_own_stream() -> None:
    a = steps.train_sample(10**6, 1000, 5)
    assert a is not None and len(a) == 1000 and len(np.unique(a)) == 1000
    assert np.all(np.diff(a) > 0) and a[-1] < 10**6
    np.testing.assert_array_equal(a, steps.train_sample(10**6, 1000, 5))
    assert not np.array_equal(a, steps.explain_sample(10**6, 1000, 5))
    assert steps.train_sample(1000, 1000, 5) is None


def test_default_trains_the_paper_catalogues_whole() -> None:
    """The paper's largest catalogue (C60: 384,260 motifs) is below the bound, and the bound
    leaves a prepared state's fingerprint alone unless it subsamples."""
    s = ModelSettings(starting_model=KEGGIN / "109725.xyz")
    assert s.train_rows == TRAIN_ROWS >= 384_260
    assert steps.train_sample(384_260, s.train_rows, 0) is None
    assert s.fingerprint() == s.updated(train_rows=s.catalogue_size).fingerprint()
    assert s.fingerprint() != s.updated(train_rows=s.catalogue_size - 1).fingerprint()


def test_surrogate_trains_on_a_seeded_subsample_above_train_rows(fitted) -> None:
    masks, rwp = fitted
    trained = steps.train_surrogate(masks, rwp, settings(train_rows=ROWS))
    assert trained.n_train + trained.n_test == ROWS
    # the same as training on those rows by hand: nothing else of the catalogue leaks in
    picked = steps.train_sample(N_MOTIFS, ROWS, 0)
    by_hand = train(features(masks[picked]), rwp[picked], seed=0, n_calls=2, cv_folds=3)
    assert trained.booster.save_raw() == by_hand.booster.save_raw()
    again = steps.train_surrogate(masks, rwp, settings(train_rows=ROWS))
    assert trained.booster.save_raw() == again.booster.save_raw()
    whole = steps.train_surrogate(masks, rwp, settings())
    assert whole.n_train + whole.n_test == N_MOTIFS
    # a quarter of the motifs still predicts the rest about as well as all of them
    rest = np.setdiff1d(np.arange(N_MOTIFS), picked)
    sub_mae = np.mean(np.abs(trained.predict(masks[rest]) - rwp[rest]))
    assert sub_mae < 2 * whole.test_mae


def test_intervals_build_features_of_the_resamples_only(fitted) -> None:
    """The bootstrap ensemble indexes the catalogue (``masks[idx]``) instead of taking the
    whole catalogue's feature matrix: the same intervals, for any array-like catalogue."""
    masks, rwp = fitted
    s = settings(ci_models=3, ci_rows=800)
    trained = steps.train_surrogate(masks, rwp, s)
    _, contributions = steps.explain(trained, masks)

    class RowsOnly:
        """A catalogue that refuses to be turned into one big array."""

        shape = masks.shape

        def __len__(self) -> int:
            return len(masks)

        def __getitem__(self, idx):
            return masks[idx]

        def __array__(self, *args, **kwargs):
            raise AssertionError("the whole catalogue was unpacked")

    a = steps.intervals(trained, masks, rwp, contributions, s)
    b = steps.intervals(trained, RowsOnly(), rwp, contributions, s)
    np.testing.assert_array_equal(a.low, b.low)
    np.testing.assert_array_equal(a.high, b.high)


def test_analyze_reports_how_many_motifs_trained_the_surrogate(keggin_gr) -> None:
    from motex_stream.analysis.pipeline import run_analysis

    s = settings(catalogue_size=2_000, train_rows=1_000, ci_models=0, confirm_contexts=0)
    result = run_analysis(keggin_gr, s)
    assert len(result.fits) == 2_000  # every motif is still fitted
    info = result.extra["surrogate"]
    assert info["train"] + info["test"] == 1_000 and info["test"] == 200
    assert info["subsampled"] is True
    assert result.settings["train_rows"] == 1_000
