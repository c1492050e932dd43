"""SHAP and atom contribution values on real boosters trained on known-answer masks."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import shap as shap_lib
import xgboost as xgb

from motex_stream.explain import (
    ShapCache,
    atom_contributions,
    expected_value,
    shap_summary_plot,
    shap_values,
)
from motex_stream.model.features import features
from motex_stream.model.incremental import IncrementalSurrogate
from motex_stream.model.training import TrainedModel, train
from tests.synthetic import FIXED_PARAMS as PARAMS
from tests.synthetic import random_masks, synthetic_rwp

N_ATOMS = 24


@pytest.fixture(scope="module")
def fitted() -> tuple[np.ndarray, np.ndarray, TrainedModel]:
    rng = np.random.default_rng(5)
    masks = random_masks(3000, N_ATOMS, rng)
    y = synthetic_rwp(masks, rng)
    return masks, features(masks), train(masks, y, params=PARAMS, search=False)


def test_pred_contribs_match_shap_tree_explainer() -> None:
    rng = np.random.default_rng(0)
    masks = random_masks(400, 10, rng)
    X = features(masks)
    y = 0.8 - 0.03 * masks[:, 0] + 0.02 * masks[:, 1] * masks[:, 2] + rng.normal(0, 0.01, 400)
    params = {"max_depth": 4, "eta": 0.3, "nthread": 2, "seed": 0, "verbosity": 0}
    booster = xgb.train(params, xgb.DMatrix(X, label=y), 25)
    ours = shap_values(booster, X)
    explainer = shap_lib.TreeExplainer(booster)
    theirs = explainer.shap_values(X)
    assert ours.shape == theirs.shape == (400, 11)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    assert expected_value(booster) == pytest.approx(float(explainer.expected_value), abs=1e-5)
    # Local accuracy: base value + Σ SHAP = prediction.
    pred = booster.predict(xgb.DMatrix(X))
    np.testing.assert_allclose(expected_value(booster) + ours.sum(1), pred, atol=1e-5)


def test_contribution_signs_recover_the_planted_motif(
    fitted: tuple[np.ndarray, np.ndarray, TrainedModel],
) -> None:
    masks, X, model = fitted
    contrib = atom_contributions(shap_values(model.booster, X), masks)
    v = contrib.value
    # Truth: keeping atom 0..5 changes Rwp by −0.02, 6..11 by +0.015, 12..23 by 0; the
    # paper's value (0.5·kept − 0.5·removed) is half of that change: −0.01, +0.0075, 0.
    assert (v[:6] < -0.0075).all()
    assert (v[6:12] > 0.005).all()
    assert (np.abs(v[12:]) < 0.001).all()
    assert set(contrib.ranking()[:6]) == set(range(6))
    assert set(contrib.ranking()[-6:]) == set(range(6, 12))
    assert (contrib.n_kept + contrib.n_removed == len(masks)).all()
    assert (contrib.spread_kept >= 0).all() and (contrib.spread_removed >= 0).all()
    # Size carries no information beyond the bits here, so its SHAP stays small.
    assert set(contrib.size_shap_by_size) == set(range(1, N_ATOMS + 1))
    assert max(abs(s) for s in contrib.size_shap_by_size.values()) < 0.01


def test_contribution_is_half_kept_mean_minus_half_removed_mean() -> None:
    """The paper code's definition (0.5·kept − 0.5·removed); it was kept − removed (2×)."""
    shap = np.array([[1.0, 0.5, 9.0], [3.0, -0.5, 7.0], [-2.0, 0.0, 3.0]])
    masks = np.array([[1, 1], [1, 0], [0, 1]])
    c = atom_contributions(shap, masks)
    np.testing.assert_allclose(c.value, [0.5 * 2.0 - 0.5 * (-2.0), 0.5 * 0.25 - 0.5 * (-0.5)])
    np.testing.assert_allclose(c.spread_kept, [1.0, 0.25])
    np.testing.assert_allclose(c.spread_removed, [0.0, 0.0])
    np.testing.assert_array_equal(c.n_kept, [2, 2])
    assert c.size_shap_by_size == {1: 5.0, 2: 9.0}
    np.testing.assert_array_equal(c.ranking(), [1, 0])


def test_atom_never_removed_gives_nan_and_warning(caplog: pytest.LogCaptureFixture) -> None:
    shap = np.array([[0.1, 0.2], [0.3, -0.2], [0.2, 0.0]])
    masks = np.array([[1, 1], [1, 0], [1, 1]])
    with caplog.at_level(logging.WARNING):
        c = atom_contributions(shap, masks)
    assert np.isnan(c.value[0]) and not np.isnan(c.value[1])
    assert "undefined" in caplog.text
    assert c.ranking()[-1] == 0  # NaN sorts last
    assert c.size_shap_by_size == {}


def test_shap_cache_equals_full_recomputation(
    fitted: tuple[np.ndarray, np.ndarray, TrainedModel],
) -> None:
    _, X, model = fitted
    rng = np.random.default_rng(9)
    sur = IncrementalSurrogate(model, rounds_per_frame=10, max_trees=model.n_trees + 25)
    cache = ShapCache(X)
    cache.update(sur.booster, generation=sur.generation)
    rebuilt_seen = False
    for frame in range(5):
        m = random_masks(800, N_ATOMS, rng)
        fit = sur.update(m, synthetic_rwp(m, rng, drift=0.002 * frame))
        rebuilt_seen |= fit.rebuilt
        values = cache.update(sur.booster, generation=sur.generation)
        np.testing.assert_allclose(values, shap_values(sur.booster, X), atol=2e-6)
        assert cache.expected_value == pytest.approx(expected_value(sur.booster), abs=2e-6)
    assert rebuilt_seen


def test_summary_plot_writes_png(
    fitted: tuple[np.ndarray, np.ndarray, TrainedModel], tmp_path: Path
) -> None:
    _, X, model = fitted
    names = [f"atom {i}" for i in range(N_ATOMS)] + ["size"]
    out = shap_summary_plot(shap_values(model.booster, X[:300]), X[:300], names, tmp_path / "s.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out.stat().st_size > 5000
