"""Training the surrogate by the paper's protocol, and its persistence.

Seeded 80/20 split, optional hyperparameter search (:mod:`motex_stream.model.search`) on the
training part, a final fit early-stopped on a seeded validation slice, MAE/MSE on the
untouched test part. Deterministic for a given seed; bounded by counts, not wall clock.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xgboost as xgb

from motex_stream.model.features import NTHREAD, TRAIN_NTHREAD, as_features, split_matrices
from motex_stream.model.hyperparameters import (
    DEFAULT_SHAP_BUDGET,
    Hyperparameters,
    rounds_for_budget,
)
from motex_stream.model.search import rescore, search_hyperparameters

log = logging.getLogger(__name__)

#: Files of a saved model: xgboost's own booster format (exact) and the JSON of the rest.
BOOSTER_FILE = "booster.ubj"
_META_FILE = "model.json"


@dataclass
class TrainedModel:
    """A fitted surrogate plus how it was obtained and how good it is on held-out motifs."""

    booster: xgb.Booster
    params: Hyperparameters
    test_mae: float
    test_mse: float
    n_train: int
    n_test: int
    best_iteration: int
    search_history: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def n_trees(self) -> int:
        return int(self.booster.num_boosted_rounds())

    def predict(self, masks_or_X: np.ndarray) -> np.ndarray:
        """Predicted Rwp for masks or feature rows."""
        X = as_features(masks_or_X)
        return self.booster.predict(xgb.DMatrix(X, nthread=NTHREAD))


def seeded_split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (keep, held_out) index split; held-out gets round(n·fraction) rows, ≥1 if >0."""
    perm = np.random.default_rng(seed).permutation(n)
    n_out = round(n * fraction)
    if fraction > 0:
        n_out = min(max(n_out, 1), n - 1)
    return np.sort(perm[n_out:]), np.sort(perm[:n_out])


def held_out_error(booster: xgb.Booster, X: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    if len(y) == 0:
        return math.nan, math.nan
    err = booster.predict(xgb.DMatrix(X, nthread=NTHREAD)) - y
    return float(np.mean(np.abs(err))), float(np.mean(err**2))


def _fit_early_stopping(
    params: Hyperparameters,
    X: np.ndarray,
    y: np.ndarray,
    *,
    seed: int,
    val_fraction: float,
    early_stopping_rounds: int,
    nthread: int = TRAIN_NTHREAD,
) -> tuple[xgb.Booster, int]:
    """Train up to ``params.n_estimators`` rounds, early-stopped on a seeded validation slice.

    The booster is sliced to its best iteration, so the trees that early stopping rejected do
    not cost SHAP time later. ``nthread``: xgboost's threads (default :data:`TRAIN_NTHREAD`).
    """
    fit_idx, val_idx = seeded_split(len(y), val_fraction, seed + 1)
    dfit, dval = split_matrices(X, y, fit_idx, val_idx, nthread=nthread)
    booster = xgb.train(
        params.to_xgb_params(seed=seed, nthread=nthread),
        dfit,
        num_boost_round=max(1, params.n_estimators),
        evals=[(dval, "val")],
        early_stopping_rounds=early_stopping_rounds,
        verbose_eval=False,
    )
    best = int(getattr(booster, "best_iteration", booster.num_boosted_rounds() - 1))
    if best + 1 < booster.num_boosted_rounds():
        booster = booster[: best + 1]
    booster.set_param({"nthread": NTHREAD})
    return booster, best


def train(
    masks_or_X: np.ndarray,
    y: np.ndarray,
    *,
    params: Hyperparameters | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    early_stopping_rounds: int = 20,
    search: bool = True,
    val_fraction: float = 0.1,
    nthread: int = TRAIN_NTHREAD,
    given: Sequence[dict[str, Any]] | None = None,
    given_folds: int = 5,
    **search_kwargs: Any,
) -> TrainedModel:
    """The paper's training protocol: seeded 80/20 split, optional Bayesian search with CV on
    the training part, final fit early-stopped on a validation slice of the training part,
    MAE/MSE on the untouched test part.

    ``params`` given and ``search=True`` → ``params`` is ignored in favour of the search (a
    warning is logged); ``params=None`` and ``search=False`` → :class:`Hyperparameters`
    defaults with the round cap set by the SHAP budget. The search is bounded by counts
    (``n_calls`` points × ``cv_folds`` folds) unless the caller opts into ``time_budget_s``: a
    wall-clock cap makes the result depend on machine load, so it is never a default.
    ``nthread``: xgboost threads of the final fit (:data:`TRAIN_NTHREAD`; the search uses its
    own fold threads); the trees are the same for any thread count. ``given`` (no search):
    points of a search made on other data, scored again by ``given_folds``-fold CV on this
    training part (:func:`~motex_stream.model.search.rescore`); the best is trained and
    they are the model's search history.
    """
    t0 = time.perf_counter()
    X = as_features(masks_or_X)
    y = np.asarray(y, dtype=np.float64).ravel()
    if len(X) != len(y):
        raise ValueError(f"X has {len(X)} rows but y has {len(y)}")
    train_idx, test_idx = seeded_split(len(y), test_fraction, seed)
    X_tr, y_tr, X_te, y_te = X[train_idx], y[train_idx], X[test_idx], y[test_idx]
    timings: dict[str, float] = {"split": time.perf_counter() - t0}

    history: list[dict[str, Any]] = []
    if search:
        if params is not None:
            log.warning("train(): params given together with search=True; searching anyway")
        t = time.perf_counter()
        params, history = search_hyperparameters(X_tr, y_tr, seed=seed, **search_kwargs)
        timings["search"] = time.perf_counter() - t
    elif given:
        t = time.perf_counter()
        history = rescore(X_tr, y_tr, given, cv_folds=given_folds, seed=seed)
        params = Hyperparameters.from_dict(history[0])
        timings["rescore"] = time.perf_counter() - t
    elif params is None:
        params = Hyperparameters()
        params.n_estimators = rounds_for_budget(params.max_depth, DEFAULT_SHAP_BUDGET)

    t = time.perf_counter()
    booster, best = _fit_early_stopping(
        params,
        X_tr,
        y_tr,
        seed=seed,
        val_fraction=val_fraction,
        early_stopping_rounds=early_stopping_rounds,
        nthread=nthread,
    )
    timings["fit"] = time.perf_counter() - t

    t = time.perf_counter()
    mae, mse = held_out_error(booster, X_te, y_te)
    timings["evaluate"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0
    log.info(
        "trained %d trees (depth %d): test MAE %.5f, MSE %.3g on %d motifs (%.2f s)",
        booster.num_boosted_rounds(),
        params.max_depth,
        mae,
        mse,
        len(y_te),
        timings["total"],
    )
    return TrainedModel(
        booster=booster,
        params=params,
        test_mae=mae,
        test_mse=mse,
        n_train=len(y_tr),
        n_test=len(y_te),
        best_iteration=best,
        search_history=history,
        timings=timings,
    )


def json_number(v: Any) -> Any:
    """NaN is not JSON; store it as null and read it back as NaN."""
    return None if isinstance(v, float) and math.isnan(v) else v


def _meta(model: TrainedModel) -> dict[str, Any]:
    return {
        "params": model.params.to_dict(),
        "test_mae": json_number(model.test_mae),
        "test_mse": json_number(model.test_mse),
        "n_train": model.n_train,
        "n_test": model.n_test,
        "best_iteration": model.best_iteration,
        "search_history": model.search_history,
        "timings": model.timings,
        "xgboost_version": xgb.__version__,
    }


def _from_meta(booster: xgb.Booster, meta: dict[str, Any]) -> TrainedModel:
    def num(v: Any) -> float:
        return math.nan if v is None else float(v)

    return TrainedModel(
        booster=booster,
        params=Hyperparameters.from_dict(meta["params"]),
        test_mae=num(meta["test_mae"]),
        test_mse=num(meta["test_mse"]),
        n_train=int(meta["n_train"]),
        n_test=int(meta["n_test"]),
        best_iteration=int(meta["best_iteration"]),
        search_history=list(meta.get("search_history", [])),
        timings=dict(meta.get("timings", {})),
    )


def save_model(model: TrainedModel, path: str | Path) -> Path:
    """Write ``path/booster.ubj`` (xgboost's own format, exact) and ``path/model.json``.

    No pickle: the files survive xgboost/Python upgrades and can be inspected by hand.
    """
    d = Path(path)
    d.mkdir(parents=True, exist_ok=True)
    model.booster.save_model(d / BOOSTER_FILE)
    (d / _META_FILE).write_text(json.dumps(_meta(model), indent=2))
    return d


def load_booster(path: Path) -> xgb.Booster:
    booster = xgb.Booster()
    booster.load_model(path)
    booster.set_param({"nthread": NTHREAD})
    return booster


def load_model(path: str | Path) -> TrainedModel:
    """Inverse of :func:`save_model`; the loaded booster predicts bit-identically."""
    d = Path(path)
    meta = json.loads((d / _META_FILE).read_text())
    return _from_meta(load_booster(d / BOOSTER_FILE), meta)
