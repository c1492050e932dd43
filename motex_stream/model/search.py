"""Hyperparameter search of the surrogate: Bayesian optimisation of the k-fold CV error.

Deterministic for a given seed: fixed fold permutations, a seeded scikit-optimize optimiser
and seeded row/column subsampling in xgboost. Work is bounded by counts (search points,
folds, rounds), never by wall clock unless a caller explicitly opts in, so a loaded machine
gives the same hyperparameters as a quiet one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import xgboost as xgb
from skopt import Optimizer
from skopt.space import Integer, Real
from threadpoolctl import threadpool_limits

from motex_stream.model.features import NTHREAD, split_matrices
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
    dval: xgb.DMatrix | xgb.QuantileDMatrix,
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


@dataclass
class _Evaluation:
    """One search point whose folds are running: its point, settings, round cap and folds."""

    point: list[Any]
    hp: Hyperparameters
    cap: int
    folds: list[Future[np.ndarray]]
    started: float


def _submit(
    point: list[Any],
    names: list[str],
    fold_data: list[tuple[xgb.QuantileDMatrix, xgb.DMatrix | xgb.QuantileDMatrix]],
    *,
    max_rounds: int,
    shap_budget: float,
    early_stopping_rounds: int,
    seed: int,
    pool: ThreadPoolExecutor,
) -> _Evaluation:
    """Start the k-fold CV of one search point: one single-threaded booster per fold.

    Why single-threaded folds on a pool: xgboost releases the GIL, and on ~10⁴ rows an
    OpenMP-parallel tree build barely uses its second thread (measured 1.4×) while two
    independent folds use both cores fully.
    """
    hp = Hyperparameters(**dict(zip(names, point, strict=True)), n_estimators=max_rounds)
    hp.max_depth = int(hp.max_depth)
    cap = rounds_for_budget(hp.max_depth, shap_budget, max_rounds)
    params = hp.to_xgb_params(seed=seed, nthread=1)
    folds = [
        pool.submit(_fold_curve, params, dtr, dva, cap, early_stopping_rounds)
        for dtr, dva in fold_data
    ]
    return _Evaluation(point, hp, cap, folds, time.perf_counter())


def _cv_score(ev: _Evaluation) -> tuple[float, float, int]:
    """K-fold CV MAE of a submitted point: ``(mean, std across folds, best round count)``.

    The best round minimises the fold-mean curve over the rounds every fold reached, like
    ``xgb.cv``'s early stopping.
    """
    curves = [f.result() for f in ev.folds]
    n = min(len(c) for c in curves)
    stacked = np.stack([c[:n] for c in curves])
    mean = stacked.mean(axis=0)
    best = int(np.argmin(mean))
    return float(mean[best]), float(stacked[:, best].std()), best + 1


def _scored(ev: _Evaluation) -> dict[str, Any]:
    """The history entry of a submitted point once its folds are done (its round count set
    to the CV's best): the form :func:`search_hyperparameters` and :func:`rescore` record."""
    score, spread, ev.hp.n_estimators = _cv_score(ev)
    return {
        **ev.hp.to_dict(),
        "cv_mae": score,
        "cv_mae_std": spread,
        "round_cap": ev.cap,
        "seconds": time.perf_counter() - ev.started,
    }


def _cv_data(
    X: np.ndarray, y: np.ndarray, cv_folds: int, seed: int, pool: ThreadPoolExecutor
) -> list[tuple[xgb.QuantileDMatrix, xgb.DMatrix | xgb.QuantileDMatrix]]:
    """The seeded folds' matrices of rows ``X``, ``y`` (checked), built on the pool (one
    thread each, the same bins): every point of a search, or of a re-scoring, reads them."""
    X = np.asarray(X)
    if X.dtype.kind not in "uif":
        X = X.astype(np.float32)
    y = np.asarray(y, dtype=np.float64).ravel()
    if len(X) != len(y):
        raise ValueError(f"X has {len(X)} rows but y has {len(y)}")
    if len(y) < 2 * cv_folds:
        raise ValueError(f"need at least {2 * cv_folds} rows for {cv_folds}-fold CV, got {len(y)}")
    folds = _kfold(len(y), cv_folds, seed)
    return list(pool.map(lambda f: split_matrices(X, y, *f, nthread=1), folds))


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

    Each evaluation is a k-fold CV (:func:`_submit`, :func:`_cv_score`) with early stopping,
    with the round cap lowered to what the SHAP budget allows at that depth
    (:func:`rounds_for_budget`), so the score is "the best this setting can do at an
    affordable explanation cost". The returned ``n_estimators`` is the CV's best round count.
    ``time_budget_s`` stops *asking* once exceeded (the running evaluation is finished) but
    never before the first evaluation, so there is always a result and the call overruns by
    at most one evaluation.

    Where the time goes, and why the points and scores are those of one point at a time:
    the optimiser's first ``n_initial_points`` are random draws that no score influences, so
    (without a time budget) they are asked together and all their folds share the pool, and
    no core waits for the last fold of one point before the next point starts; they are
    told in order afterwards, which is what telling them one by one does (the draws come
    from the optimiser's own generator, the model is first fitted at the last of them). The
    optimiser's Gaussian process fits run with one BLAS thread: it is a 12-point problem,
    and a second BLAS thread only spins (4-5× slower when the other core is busy; the same
    points, checked). The last point is told without fitting a model no one asks.

    Returns ``(best, history)``; ``history`` holds one dict per evaluation (parameters,
    ``cv_mae``, ``cv_mae_std``, ``n_estimators``, ``seconds``).
    """
    pool = ThreadPoolExecutor(max_workers=NTHREAD)
    fold_data = _cv_data(X, y, cv_folds, seed, pool)
    names = [d.name for d in SEARCH_SPACE]
    n_random = min(5, n_calls)
    opt = Optimizer(
        SEARCH_SPACE,
        base_estimator="GP",
        n_initial_points=n_random,
        acq_func="EI",
        acq_optimizer="sampling",
        random_state=seed,
    )
    submit = partial(
        _submit,
        names=names,
        fold_data=fold_data,
        max_rounds=max_rounds,
        shap_budget=shap_budget,
        early_stopping_rounds=early_stopping_rounds,
        seed=seed,
        pool=pool,
    )
    history: list[dict[str, Any]] = []
    t_start = time.perf_counter()
    while len(history) < n_calls:
        i = len(history)
        if i and time_budget_s is not None and time.perf_counter() - t_start > time_budget_s:
            log.info("hyperparameter search stopped by time budget after %d evaluations", i)
            break
        batch = n_random - i if time_budget_s is None and i < n_random else 1
        running = [submit(opt.ask()) for _ in range(batch)]
        for ev in running:
            entry = _scored(ev)
            with threadpool_limits(limits=1, user_api="blas"):
                opt.tell(ev.point, entry["cv_mae"], fit=len(history) + 1 < n_calls)
            history.append(entry)
            log.debug("search %d: %s → CV MAE %.5f", len(history) - 1, ev.hp, entry["cv_mae"])
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


def rescore(
    X: np.ndarray,
    y: np.ndarray,
    points: Sequence[dict[str, Any]],
    *,
    cv_folds: int = 5,
    seed: int = 0,
    shap_budget: float = DEFAULT_SHAP_BUDGET,
    max_rounds: int = MAX_ROUNDS,
    early_stopping_rounds: int = 10,
) -> list[dict[str, Any]]:
    """Search points of another search scored again on these rows, exactly as
    :func:`search_hyperparameters` scores a point (same folds, caps, early stopping, seed):
    history entries with this data's ``cv_mae`` and best round count, best first.

    Why: a live surrogate rebuilt on a later frame trains with the points its service searched
    at preparation, and both what they score and how many rounds they take move with the
    frame. The tree count sets the scale of the contribution values (the same point at frame
    1's 145 rounds gave values 1.14-1.16x below those of a two-motif frame's own 227-289), and
    the members of the interval ensemble are the best points in order (issue 20). Re-scoring
    the few points that are used costs their folds only, a third of a search for a best point
    and three members, and gives the model and the members the frame's own search would give
    whenever that search ranks the same points first.
    """
    names = [d.name for d in SEARCH_SPACE]
    with ThreadPoolExecutor(max_workers=NTHREAD) as pool:
        fold_data = _cv_data(X, y, cv_folds, seed, pool)
        running = [
            _submit(
                [h[name] for name in names],
                names,
                fold_data,
                max_rounds=max_rounds,
                shap_budget=shap_budget,
                early_stopping_rounds=early_stopping_rounds,
                seed=seed,
                pool=pool,
            )
            for h in points
        ]
        scored = [_scored(ev) for ev in running]
    return sorted(scored, key=lambda h: h["cv_mae"])


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
