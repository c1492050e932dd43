"""Interval ensemble members trained side by side (issue 23): the same numbers, bit for bit,
as one member after the other, offline (``analyze``'s contributions.csv) and live."""

from __future__ import annotations

import numpy as np
import pytest
import xgboost as xgb

from motex_stream.cli import main
from motex_stream.explain import confidence, leafshap
from motex_stream.explain.confidence import ENSEMBLE_WORKERS, ensemble_contributions
from motex_stream.model.features import features
from motex_stream.model.search import Hyperparameters
from motex_stream.stream.live.live_intervals import LiveEnsemble
from tests.conftest import KEGGIN
from tests.small_analysis import small_analysis


@pytest.fixture(scope="module")
def fitted():
    """A small real analysis of 109725 up to the ensemble's inputs (1,500 motifs, 4 members
    from the searched points, as ``steps.intervals`` builds them)."""
    run = small_analysis(catalogue_size=1500, search_calls=4, cv_folds=2, ci_models=4, ci_rows=1000)
    trained = run.trained
    points = sorted(trained.search_history, key=lambda h: h.get("cv_mae", np.inf))
    params = [Hyperparameters.from_dict(h) for h in points]
    return run.settings, run.masks, run.fits.rwp, params


def test_two_workers_is_the_default() -> None:
    assert ENSEMBLE_WORKERS == 2


def test_serial_shap_kernel_equals_the_parallel_one(fitted) -> None:
    _, masks, rwp, params = fitted
    X = features(masks)
    booster = xgb.train(
        params[0].to_xgb_params(seed=1), xgb.DMatrix(X, label=rwp), params[0].n_estimators
    )
    parallel, base = leafshap.tree_shap(booster, X)
    serial, base_serial = leafshap.tree_shap(booster, X, serial=True)
    assert np.array_equal(parallel, serial) and base == base_serial


def test_members_side_by_side_equal_one_at_a_time(fitted) -> None:
    settings, masks, rwp, params = fitted
    members = [(params[b % len(params)].to_xgb_params(seed=0), params[b % len(params)].n_estimators)
               for b in range(5)]  # fmt: skip
    one = ensemble_contributions(rwp, masks, members, seed=0, rows=settings.ci_rows, workers=1)
    assert np.isfinite(one).all() and len({row.tobytes() for row in one}) == 5
    for workers in (2, 3, None):
        side = ensemble_contributions(rwp, masks, members, 0, settings.ci_rows, workers=workers)
        assert side.tobytes() == one.tobytes(), workers


def test_live_ensemble_is_the_same_with_either_worker_count(fitted, monkeypatch) -> None:
    _, masks, rwp, params = fitted
    ids = np.arange(len(masks))
    paired = LiveEnsemble(masks, params[:3], 800, seed=5).build(rwp, ids)
    monkeypatch.setattr(confidence, "ENSEMBLE_WORKERS", 1)
    sequential = LiveEnsemble(masks, params[:3], 800, seed=5).build(rwp, ids)
    assert paired.tobytes() == sequential.tobytes()


@pytest.mark.slow
def test_analyze_contributions_csv_is_byte_identical(tmp_path, keggin_gr, monkeypatch) -> None:
    """The README command (smaller catalogue): contributions.csv, which holds the values,
    intervals and labels, the same bytes with the members paired as one at a time."""

    def analyze(out):
        assert main([
            "analyze", str(keggin_gr), "--model", str(KEGGIN / "109725.xyz"), "--permute", "W",
            "--threshold", "2.5", "--rmin", "1.6", "--rmax", "10", "--qdamp", "0.05",
            "--qbroad", "0.01", "--biso", "0.4", "--catalogue", "3000", "--seed", "0",
            "--out", str(out),
        ]) == 0  # fmt: skip
        return (out / "contributions.csv").read_bytes()

    paired = analyze(tmp_path / "paired")
    monkeypatch.setattr(confidence, "ENSEMBLE_WORKERS", 1)
    sequential = analyze(tmp_path / "sequential")
    assert paired == sequential
