"""Confidence intervals of atom contribution values, with real XGBoost on the bundled data."""

from __future__ import annotations

import numpy as np
import pytest

from motex_stream.analysis import steps
from motex_stream.analysis.settings import ModelSettings
from motex_stream.explain.confidence import interval, labels, sampling_error
from motex_stream.explain.contributions import AtomContributions
from tests.conftest import KEGGIN


def test_labels_and_interval() -> None:
    assert labels(np.array([-2.0, 1.0, -1.0, np.nan]), np.array([-1.0, 2.0, 1.0, np.nan])) == [
        "keep",
        "remove",
        "uncertain",
        "uncertain",
    ]
    low, high, lab = interval(np.array([-1.0, 0.1]), np.array([0.1, 0.1]), 0.9)
    np.testing.assert_allclose(high - low, 2 * 1.6448536 * 0.1, rtol=1e-6)
    assert lab == ["keep", "uncertain"]
    with pytest.raises(ValueError, match="level"):
        interval(np.zeros(1), np.zeros(1), 1.0)


def test_sampling_error() -> None:
    c = AtomContributions(
        value=np.array([-0.1]),
        spread_kept=np.array([0.3]),
        spread_removed=np.array([0.4]),
        n_kept=np.array([9]),
        n_removed=np.array([16]),
        size_shap_by_size={},
    )
    np.testing.assert_allclose(sampling_error(c), [np.sqrt(0.01 + 0.01)])


@pytest.fixture(scope="module")
def fitted():
    """A small real analysis of 109725 up to the trained surrogate (1,500 motifs)."""
    settings = ModelSettings(
        starting_model=KEGGIN / "109725.xyz",
        catalogue_size=1500,
        search_calls=3,
        cv_folds=2,
        qmax=20.0,
        ci_models=3,
    )
    data = steps.load_fit_data(KEGGIN / "DanMAX_AlphaKeggin.gr", settings)
    model = steps.load_model(data.settings)
    masks = steps.make_catalogue(model, data.settings)
    engine = steps.prepare_engine(model, data.settings, data.r)
    fits = steps.fit_masks(engine, masks, data.g, "isotropic")
    trained = steps.train_surrogate(masks, fits.rwp, data.settings)
    _, contributions = steps.explain(trained, masks)
    return data.settings, masks, fits, trained, contributions


def test_intervals_real_xgboost(fitted) -> None:
    settings, masks, fits, trained, contributions = fitted
    ci = steps.intervals(trained, masks, fits.rwp, contributions, settings)
    value = contributions.value
    assert (ci.low <= value).all() and (value <= ci.high).all()
    assert (ci.ensemble_sd > 0).all() and (ci.sampling_se > 0).all()
    assert ci.n_models == 3 and ci.level == 0.9
    # the paper's answer for 109725: the odd-numbered W (one complete Keggin unit) are kept
    keep = {i + 1 for i, lab in enumerate(ci.label) if lab == "keep"}
    assert keep <= set(range(1, 25, 2))
    assert len(keep) >= 9
    assert not {i + 1 for i, lab in enumerate(ci.label) if lab == "remove"} & set(range(1, 25, 2))
    # seeded: the same settings give the same intervals
    again = steps.intervals(trained, masks, fits.rwp, contributions, settings)
    np.testing.assert_array_equal(again.low, ci.low)
    np.testing.assert_array_equal(again.high, ci.high)
    # a higher level widens every interval; no ensemble leaves the sampling error alone
    wide = steps.intervals(trained, masks, fits.rwp, contributions, settings.updated(ci_level=0.99))
    assert ((wide.high - wide.low) > (ci.high - ci.low)).all()
    alone = steps.intervals(trained, masks, fits.rwp, contributions, settings.updated(ci_models=0))
    np.testing.assert_allclose((alone.high - alone.low) / 2, 1.6448536 * alone.sampling_se, 1e-6)
    assert ((alone.high - alone.low) < (ci.high - ci.low)).all()
