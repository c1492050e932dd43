"""Hyperparameter search of the surrogate: Bayesian optimisation of the k-fold CV error.

Deterministic for a given seed: fixed fold permutations, a seeded scikit-optimize optimiser
and seeded row/column subsampling in xgboost. Work is bounded by counts (search points,
folds, rounds), never by wall clock unless a caller explicitly opts in, so a loaded machine
gives the same hyperparameters as a quiet one.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import xgboost as xgb
from skopt import Optimizer
from skopt.space import Integer, Real

from motex_stream.model.features import NTHREAD, quantised
from motex_stream.model.hyperparameters import (
    DEFAULT_SHAP_BUDGET,
    MAX_ROUNDS,
    Hyperparameters,
    rounds_for_budget,
)

log = logging.getLogger(__name__)


#: Search space. learning_rate/max_depth follow the paper's ranges; the regularisers are kept
#: moderate because mask data are binary and plentiful (10⁴ rows), so overfitting is mild.
SEARCH_SPACE = [
    Real(0.05, 0.8, prior="log-uniform", name="learning_rate"),
    Integer(2, 8, name="max_depth"),
    Real(1.0, 50.0, prior="log-uniform", name="min_child_weight"),
    Real(0.5, 1.0, name="subsample"),
    Real(0.5, 1.0, name="colsample_bytree"),
    Real(0.01, 10.0, prior="log-uniform", name="reg_lambda"),
]


def _kfold(n: int, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Seeded shuffled K-fold index pairs (fixed once, reused by every search evaluation)."""
    perm = np.random.default_rng(seed).permutation(n)
    parts = np.array_split(perm, k)
    return [
        (np.sort(np.concatenate(parts[:i] + parts[i + 1 :])), np.sort(parts[i])) for i in range(k)
    ]


def _fold_curve(
    params: dict[str, Any],
    dtrain: xgb.QuantileDMatrix,
    dval: xgb.QuantileDMatrix,
    cap: int,
    early_stopping_rounds: int,
) -> np.ndarray:
    """Validation-MAE curve of one CV fold, stopped early on that fold's own validation part."""
    result: dict[str, dict[str, list[float]]] = {}
    xgb.train(
        params,
        dtrain,
        num_boost_round=cap,
        evals=[(dval, "val")],
        evals_result=result,
        early_stopping_rounds=early_stopping_rounds,
        verbose_eval=False,
    )
    return np.asarray(result["val"]["mae"], dtype=np.float64)


def _cv(
    hp: Hyperparameters,
    fold_data: list[tuple[xgb.QuantileDMatrix, xgb.QuantileDMatrix]],
    cap: int,
    early_stopping_rounds: int,
    seed: int,
    pool: ThreadPoolExecutor,
) -> tuple[float, float, int]:
    """K-fold CV MAE: ``(mean, std across folds, best round count)``.

    Folds run concurrently, one single-threaded booster each (xgboost releases the GIL): on
    ~10⁴ rows an OpenMP-parallel tree build barely uses its second thread (measured 1.4×), two
    independent folds use both cores fully. The best round minimises the fold-mean curve over
    the rounds every fold reached, like ``xgb.cv``'s early stopping.
    """
    params = hp.to_xgb_params(seed=seed, nthread=1)
    futures = [
        pool.submit(_fold_curve, params, dtr, dva, cap, early_stopping_rounds)
        for dtr, dva in fold_data
    ]
    curves = [f.result() for f in futures]
    n = min(len(c) for c in curves)
    stacked = np.stack([c[:n] for c in curves])
    mean = stacked.mean(axis=0)
    best = int(np.argmin(mean))
    return float(mean[best]), float(stacked[:, best].std()), best + 1


def search_hyperparameters(
    X: np.ndarray,
    y: np.ndarray,
    *,
    n_calls: int = 12,
    cv_folds: int = 5,
    seed: int = 0,
    time_budget_s: float | None = None,
    shap_budget: float = DEFAULT_SHAP_BUDGET,
    max_rounds: int = MAX_ROUNDS,
    early_stopping_rounds: int = 10,
) -> tuple[Hyperparameters, list[dict[str, Any]]]:
    """Bayesian optimisation (GP, scikit-optimize ask/tell) of the k-fold CV MAE.

    Each evaluation is a k-fold CV (:func:`_cv`) with early stopping, with the round cap
    lowered to what the SHAP budget allows at that depth (:func:`rounds_for_budget`), so the
    score is "the best this setting can do at an affordable explanation cost". The returned
    ``n_estimators`` is the CV's best round count. ``time_budget_s`` stops *asking* once
    exceeded (the running evaluation is finished) but never before the first evaluation, so
    there is always a result and the call overruns by at most one evaluation. Defaults
    (12 calls, 5 folds) take ≈2.5-3 s for 8 000 × 25 training rows on two idle cores.

    Returns ``(best, history)``; ``history`` holds one dict per evaluation (parameters,
    ``cv_mae``, ``cv_mae_std``, ``n_estimators``, ``seconds``).
    """
    X = np.asarray(X)
    if X.dtype.kind not in "uif":
        X = X.astype(np.float32)
    y = np.asarray(y, dtype=np.float64).ravel()
    if len(X) != len(y):
        raise ValueError(f"X has {len(X)} rows but y has {len(y)}")
    if len(y) < 2 * cv_folds:
        raise ValueError(f"need at least {2 * cv_folds} rows for {cv_folds}-fold CV, got {len(y)}")
    fold_data = []
    for tr, va in _kfold(len(y), cv_folds, seed):
        # one fold's row copies at a time: the quantised matrices do not keep them
        dtrain = quantised(X[tr], y[tr])
        fold_data.append((dtrain, quantised(X[va], y[va], ref=dtrain)))
    pool = ThreadPoolExecutor(max_workers=NTHREAD)
    names = [d.name for d in SEARCH_SPACE]
    opt = Optimizer(
        SEARCH_SPACE,
        base_estimator="GP",
        n_initial_points=min(5, n_calls),
        acq_func="EI",
        acq_optimizer="sampling",
        random_state=seed,
    )
    history: list[dict[str, Any]] = []
    t_start = time.perf_counter()
    for i in range(n_calls):
        if i and time_budget_s is not None and time.perf_counter() - t_start > time_budget_s:
            log.info("hyperparameter search stopped by time budget after %d evaluations", i)
            break
        point = opt.ask()
        hp = Hyperparameters(**dict(zip(names, point, strict=True)), n_estimators=max_rounds)
        hp.max_depth = int(hp.max_depth)
        cap = rounds_for_budget(hp.max_depth, shap_budget, max_rounds)
        t0 = time.perf_counter()
        score, spread, hp.n_estimators = _cv(hp, fold_data, cap, early_stopping_rounds, seed, pool)
        opt.tell(point, score)
        history.append(
            {
                **hp.to_dict(),
                "cv_mae": score,
                "cv_mae_std": spread,
                "round_cap": cap,
                "seconds": time.perf_counter() - t0,
            }
        )
        log.debug("search %d: %s → CV MAE %.5f", i, hp, score)
    pool.shutdown()
    if not history:
        raise RuntimeError("time budget left no room for a single search evaluation")
    best_entry = min(history, key=lambda h: h["cv_mae"])
    best_hp = Hyperparameters.from_dict(best_entry)
    log.info(
        "search: %d evaluations in %.2f s, best CV MAE %.5f with %s",
        len(history),
        time.perf_counter() - t_start,
        best_entry["cv_mae"],
        best_hp,
    )
    return best_hp, history


def search_trace(history: list[dict]) -> list[dict]:
    """The search as the report records it: each point tried, its CV score and round count.

    ``analyze`` reports it, and the live analyzer keeps it to rebuild its surrogate and its
    interval members without searching again, so both take it from here."""
    keep = (
        "learning_rate",
        "max_depth",
        "min_child_weight",
        "subsample",
        "colsample_bytree",
        "reg_lambda",
        "n_estimators",
        "cv_mae",
        "cv_mae_std",
    )
    return [{k: h[k] for k in keep if k in h} for h in history]
