"""The per-leaf pattern TreeSHAP equals xgboost's exact TreeSHAP (and the shap package)."""

from __future__ import annotations

import numpy as np
import pytest
import shap as shap_lib
import xgboost as xgb

from motex_stream.explain import ShapCache, atom_contributions, shap_values
from motex_stream.explain.leafshap import leaf_tables, tree_shap
from motex_stream.model.features import features
from motex_stream.model.hyperparameters import Hyperparameters
from motex_stream.model.incremental import IncrementalSurrogate
from motex_stream.model.training import train
from tests.synthetic import random_masks, synthetic_rwp

N_ATOMS = 24


def _booster(depth: int, rounds: int, seed: int, **extra: float) -> tuple[xgb.Booster, np.ndarray]:
    rng = np.random.default_rng(seed)
    masks = random_masks(2000, N_ATOMS, rng)
    y = synthetic_rwp(masks, rng) + 0.01 * masks[:, 0] * masks[:, 7]
    X = features(masks)
    params = {
        "max_depth": depth,
        "eta": 0.3,
        "subsample": 0.8,
        "colsample_bytree": 0.7,
        "nthread": 2,
        "seed": seed,
        "verbosity": 0,
        **extra,
    }
    return xgb.train(params, xgb.DMatrix(X, label=y), rounds), X


@pytest.mark.parametrize("depth", [1, 2, 3, 4, 6])
def test_leaf_tables_equal_pred_contribs(depth: int) -> None:
    booster, X = _booster(depth, 15, seed=depth)
    ours, base = tree_shap(booster, X)
    c = booster.predict(xgb.DMatrix(X), pred_contribs=True)
    np.testing.assert_allclose(ours, c[:, :-1], rtol=0, atol=1e-6)
    assert base == pytest.approx(float(c[0, -1]), abs=1e-6)
    # local accuracy: base value + Σ SHAP = prediction
    np.testing.assert_allclose(base + ours.sum(1), booster.predict(xgb.DMatrix(X)), atol=1e-5)


def test_leaf_tables_equal_shap_package() -> None:
    booster, X = _booster(5, 10, seed=11)
    ours, base = tree_shap(booster, X[:300])
    explainer = shap_lib.TreeExplainer(booster)
    np.testing.assert_allclose(ours, explainer.shap_values(X[:300]), atol=1e-5)
    assert base == pytest.approx(float(explainer.expected_value), abs=1e-5)


def test_repeated_splits_on_one_feature_and_unsplit_trees() -> None:
    # the size column (integer-valued) is split several times on one path; a huge
    # min_child_weight late in boosting leaves trees that are a single leaf (no features)
    rng = np.random.default_rng(3)
    masks = random_masks(1500, 8, rng)
    X = features(masks)
    y = (X[:, -1] - 4.0) ** 2 + 0.1 * masks[:, 0]
    b = xgb.train({"max_depth": 6, "eta": 0.5, "nthread": 2}, xgb.DMatrix(X, label=y), 8)
    tables = leaf_tables(b)
    assert tables.depth.max() < 6  # repeated features merged into one path entry
    stump = xgb.train(
        {"max_depth": 3, "min_child_weight": 1e9, "nthread": 2}, xgb.DMatrix(X, label=y), 2
    )
    for booster in (b, stump):
        ours, base = tree_shap(booster, X)
        c = booster.predict(xgb.DMatrix(X), pred_contribs=True)
        np.testing.assert_allclose(ours, c[:, :-1], atol=1e-6)
        assert base == pytest.approx(float(c[0, -1]), abs=1e-5)


def test_live_contributions_match_exact_treeshap_through_rebuilds() -> None:
    """What the live service publishes (leaf engine, incremental) vs exact xgboost TreeSHAP."""
    rng = np.random.default_rng(8)
    catalogue = random_masks(4000, N_ATOMS, rng)
    X = features(catalogue)
    base = train(
        catalogue,
        synthetic_rwp(catalogue, rng),
        params=Hyperparameters(learning_rate=0.3, max_depth=4, n_estimators=30),
        search=False,
    )
    sur = IncrementalSurrogate(base, rounds_per_frame=10, max_trees=60)
    fast = ShapCache(X)
    exact = ShapCache(X, engine="xgboost")
    rebuilds = 0
    for frame in range(8):
        idx = rng.choice(len(catalogue), 1500, replace=False)
        fit = sur.update(X[idx], synthetic_rwp(catalogue[idx], rng, drift=0.003 * frame))
        rebuilds += fit.rebuilt
        a = fast.update(sur.booster, rebuilt=fit.rebuilt, generation=sur.generation)
        b = exact.update(sur.booster, rebuilt=fit.rebuilt, generation=sur.generation)
        np.testing.assert_allclose(a, b, atol=1e-6)
        assert fast.expected_value == pytest.approx(exact.expected_value, abs=1e-5)
        ca = atom_contributions(a, catalogue)
        cb = atom_contributions(shap_values(sur.booster, X), catalogue)
        assert np.max(np.abs(ca.value - cb.value)) <= 1e-3  # the bound
        np.testing.assert_allclose(ca.value, cb.value, atol=1e-6)  # what we actually get
        np.testing.assert_allclose(ca.spread_kept, cb.spread_kept, atol=1e-6)
        np.testing.assert_allclose(ca.spread_removed, cb.spread_removed, atol=1e-6)
    assert rebuilds >= 1


def test_shap_cache_rejects_unknown_engine() -> None:
    with pytest.raises(ValueError, match="engine"):
        ShapCache(np.zeros((2, 3)), engine="gpu")
