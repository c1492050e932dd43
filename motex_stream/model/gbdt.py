"""XGBoost surrogate of Rwp as a function of the motif mask (ML-MotEx step 3).

The surrogate exists only to be explained: its TreeSHAP values become the atom contribution
values of step 4. Two consequences shape this module:

* **Model size is part of the objective.** Exact TreeSHAP costs about
  ``rows × Σ_trees leaves × depth²`` (≈3 ns per unit per row on two cores with xgboost's CPU
  implementation). A 150-tree depth-8 ensemble is as accurate as a 40-tree depth-4 one on mask
  data but takes a minute to explain 10⁴ motifs instead of a third of a second. The
  hyperparameter search therefore caps the number of boosting rounds per depth so that the
  resulting ensemble fits a SHAP cost budget (:data:`DEFAULT_SHAP_BUDGET`); deep trees only win
  if they are good with few rounds.
* **The live service warm-starts the booster once per frame.** :class:`IncrementalSurrogate`
  adds a few trees per frame and rebuilds when a tree cap is reached, so the per-frame cost of
  boosting *and* of SHAP (only the new trees need explaining) stays bounded.

Everything is deterministic for a given seed: fixed fold/split permutations, a seeded
scikit-optimize optimiser and seeded row/column subsampling in xgboost. Work is bounded by
counts (search points, folds, rounds), never by wall clock unless a caller explicitly opts in,
so a loaded machine gives the same model as a quiet one.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xgboost as xgb
from numpy.typing import DTypeLike
from skopt import Optimizer
from skopt.space import Integer, Real

log = logging.getLogger(__name__)

#: Threads given to xgboost. The offline job and the service both target a 2-core host.
NTHREAD = 2

#: Per-row TreeSHAP cost budget of a trained ensemble, in units of Σ_trees leaves × depth²
#: (bounded above by ``n_trees · 2**depth · depth**2``). 50 000 units ≈ 1.5 s for 10⁴ motifs
#: on two cores — the share of the 15 s offline analysis left for SHAP after fitting and search.
DEFAULT_SHAP_BUDGET = 50_000

#: Per-frame TreeSHAP budget of the live service for the trees one update adds (same units):
#: 3 300 units ≈ 0.1 s for 10⁴ catalogue motifs, half of the ~0.2 s a frame may cost.
FRAME_SHAP_BUDGET = 3_300

#: Upper bound on boosting rounds anywhere in this module (search, training, rebuilds).
MAX_ROUNDS = 300

_BOOSTER_FILE = "booster.ubj"
_META_FILE = "model.json"
_STATE_FILE = "surrogate.json"


def features(masks: np.ndarray, dtype: DTypeLike = np.float32) -> np.ndarray:
    """Feature matrix of the paper: the N mask bits, then the motif size as the last column.

    The size column is redundant with the bits for a linear model but not for trees: it lets a
    single split express "motifs this small never fit", which the paper reads off its SHAP.
    ``dtype``: float32 for SHAP and prediction; training takes :func:`training_features`.
    """
    m = np.atleast_2d(np.asarray(masks))
    if m.ndim != 2:
        raise ValueError(f"masks must be 2-D (motifs × atoms), got shape {m.shape}")
    bits = (m != 0).astype(dtype)
    return np.hstack([bits, bits.sum(axis=1, keepdims=True, dtype=dtype)])


def training_features(masks: np.ndarray) -> np.ndarray:
    """:func:`features` as the smallest unsigned integers that hold the motif size.

    Why: xgboost's quantised training matrix (:func:`_quantised`) reads integer features as
    they are, and trains byte-identical trees from them (the values are the same 0/1 bits and
    sizes), so a 10^6-motif catalogue over 24 atoms costs 25 MB of features instead of 100.
    """
    n_atoms = np.shape(masks)[-1]  # a packed catalogue's width, without unpacking it
    return features(masks, np.uint8 if n_atoms <= np.iinfo(np.uint8).max else np.uint16)


def _quantised(
    X: np.ndarray, y: np.ndarray, ref: xgb.QuantileDMatrix | None = None
) -> xgb.QuantileDMatrix:
    """A training matrix stored as histogram bin indices (one byte per cell here).

    Why not ``xgb.DMatrix``: it keeps every cell as an (index, float) entry, 8 bytes, and the
    'hist' tree method then builds the same bin indices beside it: ~200 MB per 10^6 × 25
    matrix against ~5 MB, for each of the search's CV folds. The trees are the same (the bin
    cuts of 0/1 bits and integer sizes are the same; checked byte for byte). ``ref``: the
    training matrix whose bin cuts a validation matrix must share.
    """
    return xgb.QuantileDMatrix(X, label=y, ref=ref, nthread=NTHREAD)


def _as_features(masks_or_X: np.ndarray) -> np.ndarray:
    """Accept masks (0/1 only) or a ready feature matrix (last column = size)."""
    a = np.atleast_2d(np.asarray(masks_or_X))
    if a.size and np.isin(a, (0, 1)).all():
        # A genuine feature matrix has a size column > 1 somewhere unless every motif has ≤ 1
        # atom; a pure 0/1 matrix is therefore a mask matrix.
        return features(a)
    if a.dtype.kind == "u":  # training_features: kept compact
        return a
    return a.astype(np.float32, copy=False)


def tree_shap_cost(max_depth: int, n_trees: int) -> int:
    """Upper bound of the per-row TreeSHAP cost of ``n_trees`` trees of depth ``max_depth``."""
    return int(n_trees) * (2 ** int(max_depth)) * int(max_depth) ** 2


def rounds_for_budget(max_depth: int, budget: float, cap: int = MAX_ROUNDS) -> int:
    """Most boosting rounds at this depth whose ensemble still fits the SHAP ``budget``."""
    per_tree = tree_shap_cost(max_depth, 1)
    return max(1, min(int(cap), int(budget // per_tree)))


@dataclass
class Hyperparameters:
    """The tuned XGBoost settings; ``n_estimators`` is the round count to train (or cap)."""

    learning_rate: float = 0.3
    max_depth: int = 4
    min_child_weight: float = 1.0
    subsample: float = 1.0
    colsample_bytree: float = 1.0
    reg_lambda: float = 1.0
    n_estimators: int = 100

    def to_xgb_params(self, *, seed: int = 0, nthread: int = NTHREAD) -> dict[str, Any]:
        """Native ``xgb.train`` parameters (squared-error regression, MAE as eval metric)."""
        return {
            "objective": "reg:squarederror",
            "eval_metric": "mae",
            "tree_method": "hist",
            "eta": float(self.learning_rate),
            "max_depth": int(self.max_depth),
            "min_child_weight": float(self.min_child_weight),
            "subsample": float(self.subsample),
            "colsample_bytree": float(self.colsample_bytree),
            "lambda": float(self.reg_lambda),
            "nthread": int(nthread),
            "seed": int(seed),
            "verbosity": 0,
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Hyperparameters:
        return cls(
            learning_rate=float(d["learning_rate"]),
            max_depth=int(d["max_depth"]),
            min_child_weight=float(d["min_child_weight"]),
            subsample=float(d["subsample"]),
            colsample_bytree=float(d["colsample_bytree"]),
            reg_lambda=float(d["reg_lambda"]),
            n_estimators=int(d["n_estimators"]),
        )


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
        dtrain = _quantised(X[tr], y[tr])
        fold_data.append((dtrain, _quantised(X[va], y[va], ref=dtrain)))
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
        X = _as_features(masks_or_X)
        return self.booster.predict(xgb.DMatrix(X, nthread=NTHREAD))


def _split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (keep, held_out) index split; held-out gets round(n·fraction) rows, ≥1 if >0."""
    perm = np.random.default_rng(seed).permutation(n)
    n_out = round(n * fraction)
    if fraction > 0:
        n_out = min(max(n_out, 1), n - 1)
    return np.sort(perm[n_out:]), np.sort(perm[:n_out])


def _metrics(booster: xgb.Booster, X: np.ndarray, y: np.ndarray) -> tuple[float, float]:
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
    nthread: int = NTHREAD,
) -> tuple[xgb.Booster, int]:
    """Train up to ``params.n_estimators`` rounds, early-stopped on a seeded validation slice.

    The booster is sliced to its best iteration, so the trees that early stopping rejected do
    not cost SHAP time later. ``nthread``: the live service's background rebuild trains with
    one thread so that it leaves the other core to the frames.
    """
    fit_idx, val_idx = _split(len(y), val_fraction, seed + 1)
    dfit = _quantised(X[fit_idx], y[fit_idx])
    dval = _quantised(X[val_idx], y[val_idx], ref=dfit)
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
    nthread: int = NTHREAD,
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
    ``nthread``: xgboost threads of the final fit (the search uses its own fold threads).
    """
    t0 = time.perf_counter()
    X = _as_features(masks_or_X)
    y = np.asarray(y, dtype=np.float64).ravel()
    if len(X) != len(y):
        raise ValueError(f"X has {len(X)} rows but y has {len(y)}")
    train_idx, test_idx = _split(len(y), test_fraction, seed)
    X_tr, y_tr, X_te, y_te = X[train_idx], y[train_idx], X[test_idx], y[test_idx]
    timings: dict[str, float] = {"split": time.perf_counter() - t0}

    history: list[dict[str, Any]] = []
    if search:
        if params is not None:
            log.warning("train(): params given together with search=True; searching anyway")
        t = time.perf_counter()
        params, history = search_hyperparameters(X_tr, y_tr, seed=seed, **search_kwargs)
        timings["search"] = time.perf_counter() - t
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
    mae, mse = _metrics(booster, X_te, y_te)
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


def _json_safe(v: Any) -> Any:
    """NaN is not JSON; store it as null and read it back as NaN."""
    return None if isinstance(v, float) and math.isnan(v) else v


def _meta(model: TrainedModel) -> dict[str, Any]:
    return {
        "params": model.params.to_dict(),
        "test_mae": _json_safe(model.test_mae),
        "test_mse": _json_safe(model.test_mse),
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
    model.booster.save_model(d / _BOOSTER_FILE)
    (d / _META_FILE).write_text(json.dumps(_meta(model), indent=2))
    return d


def _load_booster(path: Path) -> xgb.Booster:
    booster = xgb.Booster()
    booster.load_model(path)
    booster.set_param({"nthread": NTHREAD})
    return booster


def load_model(path: str | Path) -> TrainedModel:
    """Inverse of :func:`save_model`; the loaded booster predicts bit-identically."""
    d = Path(path)
    meta = json.loads((d / _META_FILE).read_text())
    return _from_meta(_load_booster(d / _BOOSTER_FILE), meta)


def _boost_more(
    booster: xgb.Booster,
    params: Hyperparameters,
    X: np.ndarray,
    y: np.ndarray,
    rounds: int,
    seed: int,
) -> xgb.Booster:
    """Warm start: exactly ``rounds`` more trees on (X, y); ``booster`` itself is not modified."""
    dfit = xgb.DMatrix(X, label=y, nthread=NTHREAD)
    # seed_per_iteration: a booster loaded for continued training does not reseed xgboost's
    # process-wide random engine, so row/column sampling of the new trees would depend on
    # what trained before in this process (two analyzers prepared alike gave different
    # frame-1 values). Reseeding each round from (seed, round) makes them a function of the
    # inputs alone.
    xgb_params = {**params.to_xgb_params(seed=seed), "seed_per_iteration": True}
    return xgb.train(xgb_params, dfit, num_boost_round=rounds, xgb_model=booster)


def continue_training(
    model: TrainedModel,
    X: np.ndarray,
    y: np.ndarray,
    rounds: int,
    *,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> TrainedModel:
    """Add exactly ``rounds`` trees fitted to new data (warm start), MAE on 20 % of that data.

    No early stopping: the caller asked for a fixed amount of adaptation, and the tree count
    must be predictable for the SHAP cost. The input model is left untouched.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be ≥ 1, got {rounds}")
    t0 = time.perf_counter()
    X = _as_features(X)
    y = np.asarray(y, dtype=np.float64).ravel()
    fit_idx, test_idx = _split(len(y), test_fraction, seed)
    booster = _boost_more(model.booster, model.params, X[fit_idx], y[fit_idx], rounds, seed)
    t1 = time.perf_counter()
    mae, mse = _metrics(booster, X[test_idx], y[test_idx])
    t2 = time.perf_counter()
    return TrainedModel(
        booster=booster,
        params=model.params,
        test_mae=mae,
        test_mse=mse,
        n_train=len(fit_idx),
        n_test=len(test_idx),
        best_iteration=booster.num_boosted_rounds() - 1,
        search_history=model.search_history,
        timings={"fit": t1 - t0, "evaluate": t2 - t1, "total": t2 - t0},
    )


@dataclass
class FrameFit:
    """What one :meth:`IncrementalSurrogate.update` did and how well the result fits."""

    frame: int
    mae: float
    n_trees: int
    rebuilt: bool
    n_fit: int
    n_holdout: int
    timings: dict[str, float]
    #: a background rebuild was started on this frame's data (swapped in at the next update)
    rebuild_started: bool = False
    #: the surrogate's generation after this update (increases with every rebuild)
    generation: int = 0


#: Warm-start frames a freshly built surrogate must have room for below the tree cap: a cap
#: lower than its tree count plus this many frames' rounds is raised (see the class doc).
MIN_WARM_FRAMES = 2


def effective_tree_cap(max_trees: int, base_trees: int, rounds_per_frame: int) -> int:
    """The tree cap actually enforced: ``max_trees``, raised to the serving model's tree count
    when it was built (``base_trees``: the searched model, early-stopped) plus
    :data:`MIN_WARM_FRAMES` frames' rounds when it is lower.

    Why raise it rather than fit the model under it: a rebuild re-trains the *searched* model
    (its hyperparameters and round count), which is what makes the live answer the offline
    one; squeezing it into fewer trees with a larger learning rate is another, worse model
    (issue 20: the 12 Keggin W lost their ``keep`` labels). The cap exists to bound the
    per-frame SHAP cost and to make the surrogate forget old frames, and the searched count
    is already bounded by the SHAP budget (:func:`rounds_for_budget`). A cap below the
    searched model therefore means "rebuild every :data:`MIN_WARM_FRAMES` + 1 frames": the
    fewer warm-start trees a model carries, the closer it stays to a fresh fit of the frame.
    """
    floor = int(base_trees) + MIN_WARM_FRAMES * int(rounds_per_frame)
    return max(int(max_trees), floor)


class IncrementalSurrogate:
    """The per-starting-model surrogate of the live service, updated once per data frame.

    Each :meth:`update` warm-starts ``rounds_per_frame`` trees on the frame's freshly fitted
    motifs (a held-out slice of them scores the result). Boosting only ever *adds* trees, so
    the ensemble would grow without bound and remember every past frame; when the next update
    would exceed the tree cap the surrogate is **rebuilt** instead: the searched model trained
    afresh on the current frame alone, by the offline training protocol (:func:`train` with
    the stored hyperparameters, ``search=False``: the same round cap and the same early
    stopping on a seeded validation slice). Why rebuild rather than e.g. drop the oldest
    trees: boosted trees are fitted to each other's residuals, so removing early trees leaves
    a biased model, while a fresh fit on current data is both unbiased and forgets stale
    frames. Why not a smaller, faster-learning model (the squeeze this class once did): it is
    a different function, with different SHAP values; the rebuilt model must be of the same
    quality as the one ``analyze`` would train, or the live answer is not the offline one.

    The cap enforced is :func:`effective_tree_cap`: ``max_trees``, raised when it could not
    hold the serving model as built plus :data:`MIN_WARM_FRAMES` frames of warm-start trees
    (a lower cap would rebuild on every frame). ``rounds_per_frame=None`` picks 10 trees per frame,
    fewer for deep trees, so that explaining one frame's new trees fits
    :data:`FRAME_SHAP_BUDGET` (depth ≤ 4: 10, depth 5: 4, deeper: 1).

    :attr:`generation` increases on each rebuild, which lets a SHAP cache (see
    :class:`motex_stream.explain.ShapCache`) know when its cached trees were thrown away.

    **Drift.** When a frame's held-out MAE exceeds ``drift_factor`` × the reference MAE, the
    data moved faster than warm starts follow and the model is rebuilt on that frame in line
    (also with background rebuilds), so the frame is answered by a model of its own data.

    **Background rebuilds** (:meth:`start_background_rebuilds`, what the live service uses):
    when the *next* frame would reach the cap, the fresh model is trained
    on this frame's data in a background thread (one xgboost thread), and the callbacks of
    :meth:`start_background_rebuilds` run there too (the service computes the new model's
    catalogue SHAP and its interval members with them); the next :meth:`update` swaps it in,
    then boosts that frame's trees on top as usual. So no frame pays for a rebuild in line,
    the swap is one assignment, and the swap frame is fixed (the next update, waiting for the
    build only if it is not done by then, which ``timings["rebuild_wait"]`` shows) so results
    do not depend on thread timing. Inline rebuilds (no background) train with one thread as
    well, so both paths give the same trees.

    State (booster + JSON) is saved with :meth:`save` and restored with :meth:`load`; nothing
    is pickled.
    """

    def __init__(
        self,
        base: TrainedModel,
        *,
        rounds_per_frame: int | None = None,
        max_trees: int = 200,
        holdout_fraction: float = 0.2,
        seed: int = 0,
        drift_factor: float | None = 2.0,
        rebuild_trees: int | None = None,
    ) -> None:
        # rebuild_trees: ignored; the round count of the squeezed rebuild this class once did
        del rebuild_trees
        if rounds_per_frame is None:
            rounds_per_frame = min(10, rounds_for_budget(base.params.max_depth, FRAME_SHAP_BUDGET))
        if rounds_per_frame < 1:
            raise ValueError("rounds_per_frame must be ≥ 1")
        if max_trees < rounds_per_frame:
            raise ValueError("max_trees must be ≥ rounds_per_frame")
        self.booster: xgb.Booster = base.booster
        self.params = base.params
        #: trees of the serving model when it was built fresh (sets the enforced cap)
        self.base_trees = int(base.booster.num_boosted_rounds())
        self.rounds_per_frame = int(rounds_per_frame)
        self.configured_max_trees = int(max_trees)
        self.holdout_fraction = float(holdout_fraction)
        self.drift_factor = drift_factor
        self.reference_mae = float(base.test_mae)
        self.seed = int(seed)
        self.frame = 0
        self.generation = 0
        self.background = False
        self._prepare: Callable[[xgb.Booster, int], object] | None = None
        self._members: Callable[[int, np.ndarray, np.ndarray, np.ndarray], object] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._pending: Future[tuple[xgb.Booster, int]] | None = None

    @property
    def max_trees(self) -> int:
        """The tree cap enforced (:func:`effective_tree_cap` of the configured one)."""
        return effective_tree_cap(self.configured_max_trees, self.base_trees, self.rounds_per_frame)

    def start_background_rebuilds(
        self,
        prepare: Callable[[xgb.Booster, int], object] | None = None,
        members: Callable[[int, np.ndarray, np.ndarray, np.ndarray], object] | None = None,
    ) -> None:
        """Build rebuilt models in a background thread from now on (see the class doc).

        ``prepare(booster, generation)`` is called in that thread once the new booster is
        trained, before it can be swapped in (e.g. :meth:`ShapCache.prepare`); then
        ``members(generation, X, y, rows)`` with every row of the frame the booster was
        trained on (its held-out rows too) and the rows' ids given to :meth:`update` (the live
        interval ensemble is built from them, as the offline one from every fit). Inline
        rebuilds call ``members`` too.
        """
        self.background = True
        self._prepare = prepare
        self._members = members
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rebuild")

    def close(self) -> None:
        """Wait for a pending background build (dropping it) and stop the worker thread."""
        if self._pending is not None:
            self._pending.result()
            self._pending = None
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    def _fresh(self, X: np.ndarray, y: np.ndarray, seed: int) -> xgb.Booster:
        """The searched model trained afresh on (X, y) by the offline protocol (one thread)."""
        return train(
            X, y, params=self.params, search=False, seed=seed, test_fraction=0.0, nthread=1
        ).booster

    def _background_build(
        self,
        X: np.ndarray,
        y: np.ndarray,
        rows: np.ndarray,
        fit_idx: np.ndarray,
        seed: int,
        generation: int,
    ) -> tuple[xgb.Booster, int]:
        booster = self._fresh(X[fit_idx], y[fit_idx], seed)
        if self._prepare is not None:
            self._prepare(booster, generation)
        if self._members is not None:
            self._members(generation, X, y, rows)
        return booster, generation

    def _submit_rebuild(
        self, X: np.ndarray, y: np.ndarray, rows: np.ndarray, fit_idx: np.ndarray, seed: int
    ) -> None:
        assert self._executor is not None
        self._pending = self._executor.submit(
            self._background_build,
            X.copy(),
            y.copy(),
            rows.copy(),
            fit_idx,
            seed,
            self.generation + 1,
        )

    def _swap_pending(self) -> float:
        """Adopt a finished (or wait for the) background build; returns the wait in seconds."""
        assert self._pending is not None
        t = time.perf_counter()
        booster, generation = self._pending.result()
        waited = time.perf_counter() - t
        self._pending = None
        self.booster = booster
        self.base_trees = int(booster.num_boosted_rounds())
        self.generation = generation
        log.info(
            "surrogate rebuilt in the background, swapped in at frame %d with %d trees",
            self.frame,
            booster.num_boosted_rounds(),
        )
        return waited

    @property
    def n_trees(self) -> int:
        return int(self.booster.num_boosted_rounds())

    def predict(self, masks_or_X: np.ndarray) -> np.ndarray:
        return self.booster.predict(xgb.DMatrix(_as_features(masks_or_X), nthread=NTHREAD))

    def _rebuild(
        self, X: np.ndarray, y: np.ndarray, rows: np.ndarray, fit_idx: np.ndarray, seed: int
    ) -> xgb.Booster:
        """A fresh booster on the current frame's ``fit_idx`` rows (:meth:`_fresh`), in line.
        Only the ``members`` callback runs (with every row of the frame): the caller's SHAP
        cache sees ``rebuilt`` and explains the new booster with every core, faster than
        ``prepare``'s one-core pass."""
        booster = self._fresh(X[fit_idx], y[fit_idx], seed)
        self.base_trees = int(booster.num_boosted_rounds())
        self.generation += 1
        if self._members is not None:
            self._members(self.generation, X, y, rows)
        log.info(
            "surrogate rebuilt at frame %d with %d trees", self.frame, booster.num_boosted_rounds()
        )
        return booster

    def rebuild_params(self) -> Hyperparameters:
        """The hyperparameters a rebuild trains with: the searched ones, unchanged."""
        return Hyperparameters.from_dict(self.params.to_dict())

    def update(self, X: np.ndarray, y: np.ndarray, rows: np.ndarray | None = None) -> FrameFit:
        """Fold one frame's (features or masks, Rwp) into the surrogate; see the class doc.
        ``rows``: ids of the rows (e.g. catalogue indices) for the ``members`` callback;
        default ``0..len(y)-1``."""
        t0 = time.perf_counter()
        X = _as_features(X)
        y = np.asarray(y, dtype=np.float64).ravel()
        if len(X) != len(y):
            raise ValueError(f"X has {len(X)} rows but y has {len(y)}")
        ids = np.arange(len(y)) if rows is None else np.asarray(rows)
        frame_seed = self.seed + self.frame
        fit_idx, hold_idx = _split(len(y), self.holdout_fraction, frame_seed)
        timings: dict[str, float] = {}
        swapped = False
        if self._pending is not None:
            timings["rebuild_wait"] = self._swap_pending()
            swapped = True
        rebuilt = self.n_trees + self.rounds_per_frame > self.max_trees
        t = time.perf_counter()
        if rebuilt:
            booster = self._rebuild(X, y, ids, fit_idx, frame_seed)
        else:
            booster = _boost_more(
                self.booster,
                self.params,
                X[fit_idx],
                y[fit_idx],
                self.rounds_per_frame,
                frame_seed,
            )
        timings["boost"] = time.perf_counter() - t
        self.booster = booster
        fresh = rebuilt  # trained on this frame alone
        rebuilt = rebuilt or swapped
        t = time.perf_counter()
        mae, _ = _metrics(booster, X[hold_idx], y[hold_idx])
        timings["evaluate"] = time.perf_counter() - t
        # drift: the data moved faster than a few warm-start trees can follow, so the old
        # trees (fitted to past frames, a swapped-in model's included) dominate. This frame's
        # answer would be a stale model's (issue 20: Pearson -0.16 against the offline answer
        # on a crossover frame), so the model is rebuilt on this frame now, in line, even with
        # background rebuilds: one training and one full SHAP pass, on drift frames only.
        drifted = (
            not fresh
            and self.drift_factor is not None
            and np.isfinite(self.reference_mae)
            and mae > self.drift_factor * self.reference_mae
        )
        started = False
        if drifted:
            t = time.perf_counter()
            self.booster = self._rebuild(X, y, ids, fit_idx, frame_seed)
            rebuilt = True
            mae, _ = _metrics(self.booster, X[hold_idx], y[hold_idx])
            timings["drift_rebuild"] = time.perf_counter() - t
        elif self.background and self.n_trees + self.rounds_per_frame > self.max_trees:
            # the next frame would pass the cap: rebuild off the hot path
            self._submit_rebuild(X, y, ids, fit_idx, frame_seed)
            started = True
        timings["total"] = time.perf_counter() - t0
        fit = FrameFit(
            frame=self.frame,
            mae=mae,
            n_trees=self.n_trees,
            rebuilt=rebuilt,
            n_fit=len(fit_idx),
            n_holdout=len(hold_idx),
            timings=timings,
            rebuild_started=started,
            generation=self.generation,
        )
        self.frame += 1
        return fit

    def save(self, directory: str | Path) -> Path:
        """Persist booster (UBJ) and counters/settings (JSON) for a service restart.

        A background build still pending is not saved: the restored surrogate starts it again
        when the cap comes near.
        """
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self.booster.save_model(d / _BOOSTER_FILE)
        state = {
            "params": self.params.to_dict(),
            "rounds_per_frame": self.rounds_per_frame,
            "max_trees": self.configured_max_trees,
            "holdout_fraction": self.holdout_fraction,
            "drift_factor": self.drift_factor,
            "reference_mae": _json_safe(self.reference_mae),
            "seed": self.seed,
            "frame": self.frame,
            "generation": self.generation,
            "base_trees": self.base_trees,
        }
        (d / _STATE_FILE).write_text(json.dumps(state, indent=2))
        return d

    @classmethod
    def load(cls, directory: str | Path) -> IncrementalSurrogate:
        """Restore a surrogate saved by :meth:`save`; later updates continue identically.

        (A ``rebuild_trees`` entry, written by versions that squeezed rebuilt models, is
        ignored: rebuilds now re-train the searched model.)
        """
        d = Path(directory)
        state = json.loads((d / _STATE_FILE).read_text())
        booster = _load_booster(d / _BOOSTER_FILE)
        base = TrainedModel(
            booster=booster,
            params=Hyperparameters.from_dict(state["params"]),
            test_mae=math.nan if state.get("reference_mae") is None else state["reference_mae"],
            test_mse=math.nan,
            n_train=0,
            n_test=0,
            best_iteration=booster.num_boosted_rounds() - 1,
        )
        s = cls(
            base,
            rounds_per_frame=state["rounds_per_frame"],
            max_trees=state["max_trees"],
            holdout_fraction=state["holdout_fraction"],
            seed=state["seed"],
            drift_factor=state.get("drift_factor", 2.0),
        )
        s.frame = int(state["frame"])
        s.generation = int(state["generation"])
        # states saved before base_trees existed: the searched round count bounds it
        s.base_trees = int(state.get("base_trees", s.params.n_estimators))
        return s
