"""SHAP values and atom contribution values (ML-MotEx step 4).

SHAP comes from xgboost's own exact TreeSHAP (``pred_contribs=True``): it is the same
algorithm as ``shap.TreeExplainer`` on the same trees (tested to agree to ~1e-6), avoids the
shap package's model conversion, and runs on the booster's threads. The ``shap`` package is
used only for the beeswarm plot.

SHAP values are additive over trees, which the live service exploits: :class:`ShapCache`
keeps the SHAP matrix of a fixed set of motifs and, after a warm-start update, explains only
the trees that were added.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xgboost as xgb

log = logging.getLogger(__name__)

_NTHREAD = 2


def _contribs(booster: xgb.Booster, X: np.ndarray) -> np.ndarray:
    """Raw ``pred_contribs`` output: (M, F + 1), last column = bias (expected value)."""
    dm = xgb.DMatrix(np.asarray(X, dtype=np.float32), nthread=_NTHREAD)
    return booster.predict(dm, pred_contribs=True).astype(np.float64)


def shap_values(booster: xgb.Booster, X: np.ndarray) -> np.ndarray:
    """Exact TreeSHAP values (M, F) of ``booster`` on feature rows ``X`` (bias column dropped).

    Row sums plus :func:`expected_value` equal the model's prediction.
    """
    return _contribs(booster, X)[:, :-1]


def expected_value(booster: xgb.Booster) -> float:
    """The SHAP base value (prediction of the 'empty coalition'); the same for every row."""
    row = np.zeros((1, booster.num_features()), dtype=np.float32)
    return float(_contribs(booster, row)[0, -1])


def _base_score(booster: xgb.Booster) -> float:
    """The intercept xgboost adds before any tree; every sliced booster repeats it in its bias."""
    cfg = json.loads(booster.save_config())
    raw = cfg["learner"]["learner_model_param"]["base_score"]
    return float(str(raw).strip("[]"))


class ShapCache:
    """Running SHAP matrix of a growing booster on a fixed set of rows (the catalogue).

    Warm-start boosting only appends trees, and SHAP of a sum of trees is the sum of their
    SHAP, so after each update only trees ``[n_cached, n_trees)`` are explained (via model
    slicing, since xgboost's ``pred_contribs`` refuses an iteration range not starting at 0).
    Pass ``rebuilt=True`` (or a changed ``generation``) when the booster was replaced rather
    than extended; a shrunken tree count also forces a full recomputation.
    """

    def __init__(self, X: np.ndarray) -> None:
        self.X = np.asarray(X, dtype=np.float32)
        self._dm = xgb.DMatrix(self.X, nthread=_NTHREAD)
        self.values: np.ndarray | None = None
        self.expected_value: float = float("nan")
        self.n_trees = 0
        self.generation: int | None = None

    def update(
        self, booster: xgb.Booster, *, rebuilt: bool = False, generation: int | None = None
    ) -> np.ndarray:
        """SHAP (M, F) of ``booster`` on the cached rows, reusing what is already known."""
        n = int(booster.num_boosted_rounds())
        stale = (
            self.values is None
            or rebuilt
            or n < self.n_trees
            or (generation is not None and generation != self.generation)
        )
        if stale:
            c = booster.predict(self._dm, pred_contribs=True).astype(np.float64)
            self.values = c[:, :-1]
            self.expected_value = float(c[0, -1])
        elif n > self.n_trees:
            assert self.values is not None
            c = booster[self.n_trees : n].predict(self._dm, pred_contribs=True)
            self.values = self.values + c[:, :-1]
            # Each slice's bias repeats the intercept; count it once.
            self.expected_value += float(c[0, -1]) - _base_score(booster)
        self.n_trees = n
        self.generation = generation
        assert self.values is not None
        return self.values


@dataclass
class AtomContributions:
    """Per-atom contribution values: negative = keeping the atom lowers Rwp (belongs to the
    motif in the data), positive = keeping it hurts the fit."""

    value: np.ndarray  # (N,) mean SHAP when kept − mean SHAP when removed
    spread_kept: np.ndarray  # (N,) std of SHAP_i over motifs keeping atom i
    spread_removed: np.ndarray  # (N,) std of SHAP_i over motifs removing atom i
    n_kept: np.ndarray  # (N,) motifs keeping atom i
    n_removed: np.ndarray  # (N,) motifs removing atom i
    size_shap_by_size: dict[int, float]  # motif size → mean SHAP of the size feature

    def ranking(self) -> np.ndarray:
        """Atom indices from most negative (most motif-like) to most positive; NaN last."""
        return np.argsort(np.where(np.isnan(self.value), np.inf, self.value), kind="stable")


def _group_stats(s: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Column-wise mean, std and count of ``s`` over rows where ``mask`` is set (NaN if none)."""
    w = mask.astype(np.float64)
    n = w.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (s * w).sum(axis=0) / n
        var = ((s - mean) ** 2 * w).sum(axis=0) / n
    return mean, np.sqrt(var), n.astype(np.int64)


def atom_contributions(shap: np.ndarray, masks: np.ndarray) -> AtomContributions:
    """Contribution value of each permutable atom from SHAP values and the motifs' masks.

    ``shap`` has N columns (atoms) or N + 1 (atoms, then size, as built by
    :func:`motex_stream.model.features`). An atom that is kept in every motif, or in none,
    has no contrast to measure: its value is NaN and a warning is logged.
    """
    s = np.asarray(shap, dtype=np.float64)
    m = np.atleast_2d(np.asarray(masks)) != 0
    n_atoms = m.shape[1]
    if s.shape[0] != m.shape[0] or s.shape[1] not in (n_atoms, n_atoms + 1):
        raise ValueError(f"shap {s.shape} does not match masks {m.shape} (need N or N + 1 columns)")
    atoms = s[:, :n_atoms]
    mean_k, std_k, n_k = _group_stats(atoms, m)
    mean_r, std_r, n_r = _group_stats(atoms, ~m)
    value = mean_k - mean_r
    degenerate = np.flatnonzero((n_k == 0) | (n_r == 0))
    if degenerate.size:
        log.warning(
            "atoms %s are kept in all or no motifs; their contribution value is undefined (NaN)",
            degenerate.tolist(),
        )
        value[degenerate] = np.nan
    size_shap: dict[int, float] = {}
    if s.shape[1] == n_atoms + 1:
        sizes = m.sum(axis=1)
        for k in np.unique(sizes):
            size_shap[int(k)] = float(s[sizes == k, n_atoms].mean())
    return AtomContributions(
        value=value,
        spread_kept=std_k,
        spread_removed=std_r,
        n_kept=n_k,
        n_removed=n_r,
        size_shap_by_size=size_shap,
    )


def shap_summary_plot(
    shap: np.ndarray,
    X: np.ndarray,
    feature_names: Sequence[str],
    path: str | Path,
    *,
    max_display: int = 30,
) -> Path:
    """Save the shap package's beeswarm summary of ``shap`` (M, F) over ``X`` as a PNG.

    Runs headless (Agg): the offline job and the service have no display, and an interactive
    backend would block or fail there.
    """
    import matplotlib

    if matplotlib.get_backend().lower() != "agg":
        matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    import shap as shap_lib

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    shap_lib.summary_plot(
        np.asarray(shap),
        np.asarray(X),
        feature_names=list(feature_names),
        max_display=max_display,
        show=False,
    )
    fig = plt.gcf()
    fig.savefig(out, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return out
