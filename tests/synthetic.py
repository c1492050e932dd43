"""Synthetic motif data with a known answer, shared by the model and explain tests."""

from __future__ import annotations

import numpy as np

from motex_stream.model.hyperparameters import Hyperparameters

#: Small fixed surrogate hyperparameters for the synthetic problem: no search, fast, and
#: deep enough to learn which atoms matter (the model and explain tests share them).
FIXED_PARAMS = Hyperparameters(
    learning_rate=0.3,
    max_depth=3,
    min_child_weight=1.0,
    subsample=0.9,
    colsample_bytree=1.0,
    reg_lambda=1.0,
    n_estimators=150,
)


def random_masks(n: int, n_atoms: int, rng: np.random.Generator) -> np.ndarray:
    """The paper's generator: size uniform in 1..N, then which atoms are kept at random."""
    sizes = rng.integers(1, n_atoms + 1, n)
    order = np.argsort(rng.random((n, n_atoms)), axis=1)
    return (order < sizes[:, None]).astype(np.uint8)


def synthetic_rwp(masks: np.ndarray, rng: np.random.Generator, drift: float = 0.0) -> np.ndarray:
    """Atoms 0..5 lower Rwp, 6..11 raise it, 12..23 do nothing (``drift`` makes 12..17 matter)."""
    m = masks.astype(np.float64)
    return (
        0.9
        - 0.02 * m[:, :6].sum(1)
        + 0.015 * m[:, 6:12].sum(1)
        + drift * m[:, 12:18].sum(1)
        + rng.normal(0.0, 0.005, len(m))
    )
