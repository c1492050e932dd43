"""The surrogate's input: the feature matrix of a set of motif masks, and xgboost's matrices
built from it.

Why its own module: SHAP, the interval ensembles, the live analyzer and training all read
features, and most of them never train; the feature builders need only numpy (xgboost is
imported where a matrix is built), so a caller that only fits motifs pays for neither
xgboost nor scikit-optimize.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import DTypeLike

if TYPE_CHECKING:
    import xgboost as xgb

#: Threads given to xgboost. The offline job and the service both target a 2-core host.
NTHREAD = 2

#: xgboost threads of a training (the final fit, the interval members, the live warm
#: starts; the search runs its folds one thread each, side by side). Why one on a 2-core
#: host: the trees are byte-identical for any thread count (tested), two OpenMP threads gain
#: only ~1.4× on ~10⁴ rows when both cores are free, and when another process holds a core
#: the second thread's spin-waiting made trainings 14-100× slower: the 109725 final fit 0.4-
#: 1.5 s on one thread against 5.6-33 s on two (load 5-9), and `analyze`'s final fit and
#: interval members 38-85 s and 37-40 s at load 12-20 (issue 23). Prediction and SHAP of the
#: served model keep :data:`NTHREAD`.
TRAIN_NTHREAD = 1


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

    Why: xgboost's quantised training matrix (:func:`quantised`) reads integer features as
    they are, and trains byte-identical trees from them (the values are the same 0/1 bits and
    sizes), so a 10^6-motif catalogue over 24 atoms costs 25 MB of features instead of 100.
    """
    n_atoms = np.shape(masks)[-1]  # a packed catalogue's width, without unpacking it
    return features(masks, np.uint8 if n_atoms <= np.iinfo(np.uint8).max else np.uint16)


def as_features(masks_or_X: np.ndarray) -> np.ndarray:
    """The feature matrix of ``masks_or_X``: masks (0/1 only) are turned into
    :func:`features`; a ready feature matrix (last column = size) is kept, as unsigned
    integers (:func:`training_features`) or as float32."""
    a = np.atleast_2d(np.asarray(masks_or_X))
    if a.size and np.isin(a, (0, 1)).all():
        # A genuine feature matrix has a size column > 1 somewhere unless every motif has ≤ 1
        # atom; a pure 0/1 matrix is therefore a mask matrix.
        return features(a)
    if a.dtype.kind == "u":  # training_features: kept compact
        return a
    return a.astype(np.float32, copy=False)


def quantised(
    X: np.ndarray,
    y: np.ndarray,
    ref: xgb.QuantileDMatrix | None = None,
    nthread: int = NTHREAD,
) -> xgb.QuantileDMatrix:
    """A training matrix stored as histogram bin indices (one byte per cell here).

    Why not ``xgb.DMatrix``: it keeps every cell as an (index, float) entry, 8 bytes, and the
    'hist' tree method then builds the same bin indices beside it: ~200 MB per 10^6 × 25
    matrix against ~5 MB, for each of the search's CV folds. The trees are the same (the bin
    cuts of 0/1 bits and integer sizes are the same; checked byte for byte). ``ref``: the
    training matrix whose bin cuts a validation matrix must share. ``nthread``: threads of
    the construction (the search builds its folds' matrices one thread each, side by side).
    """
    import xgboost as xgb

    return xgb.QuantileDMatrix(X, label=y, ref=ref, nthread=nthread)


#: Most validation cells (rows × features) kept as a plain ``xgb.DMatrix``
#: (:func:`split_matrices`); above it the validation part is quantised like the training part.
#: Why: xgboost evaluates every boosting round on the validation part, and on a quantised
#: matrix that evaluation costs about twice what it costs on a plain one (0.25 against
#: 0.1 ms a round for 1 600 × 25 cells; a 109725 search trains ~7 600 rounds), while the MAE
#: curve is the same number for number (0/1 bits and integer sizes predict the same either
#: way; the 109725 search history is identical). A plain matrix costs 8 bytes a cell, so
#: large catalogues keep the quantised one (1 byte a cell): 2²² cells are 32 MB.
PLAIN_VALIDATION_CELLS = 1 << 22


def split_matrices(
    X: np.ndarray, y: np.ndarray, tr: np.ndarray, va: np.ndarray, nthread: int = NTHREAD
) -> tuple[xgb.QuantileDMatrix, xgb.DMatrix | xgb.QuantileDMatrix]:
    """Training matrix (quantised) of rows ``tr`` and validation matrix of rows ``va`` (see
    :data:`PLAIN_VALIDATION_CELLS`), for training early-stopped on a validation part: a
    search's CV fold or the final fit. The row copies are dropped once they are built."""
    import xgboost as xgb

    dtrain = quantised(X[tr], y[tr], nthread=nthread)
    if len(va) * X.shape[1] <= PLAIN_VALIDATION_CELLS:
        return dtrain, xgb.DMatrix(X[va], label=y[va], nthread=nthread)
    return dtrain, quantised(X[va], y[va], ref=dtrain, nthread=nthread)
