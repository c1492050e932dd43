"""SHAP values and atom contribution values (ML-MotEx step 4).

SHAP comes from xgboost's own exact TreeSHAP (``pred_contribs=True``): it is the same
algorithm as ``shap.TreeExplainer`` on the same trees (tested to agree to ~1e-6), avoids the
shap package's model conversion, and runs on the booster's threads. The ``shap`` package is
used only for the beeswarm plot.

SHAP values are additive over trees, which the live service exploits: :class:`ShapCache`
keeps the SHAP matrix of a fixed set of motifs and, after a warm-start update, explains only
the trees that were added. It computes the same exact TreeSHAP values with per-leaf pattern
tables (:mod:`motex_stream.explain.leafshap`), 10× faster than ``pred_contribs`` on the
live service's small trees; ``engine="xgboost"`` keeps xgboost's own implementation.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numba
import numpy as np
import xgboost as xgb

from motex_stream.explain import leafshap

log = logging.getLogger(__name__)

_NTHREAD = 2

#: Weight of each group mean in a contribution value: 0.5 · mean SHAP kept − 0.5 · mean SHAP
#: removed, the paper code's definition, so our numbers compare 1:1 with published ones (the
#: plain difference of the means is twice theirs). For an atom whose effect on Rwp is additive,
#: this is half the Rwp change of keeping it (the difference of the means is the whole change).
CONTRIBUTION_WEIGHT = 0.5


def _contribs(booster: xgb.Booster, X: np.ndarray) -> np.ndarray:
    """Raw ``pred_contribs`` output: (M, F + 1), last column = bias (expected value)."""
    dm = xgb.DMatrix(np.asarray(X, dtype=np.float32), nthread=_NTHREAD)
    return booster.predict(dm, pred_contribs=True).astype(np.float64)


def shap_values(booster: xgb.Booster, X: np.ndarray) -> np.ndarray:
    """Exact TreeSHAP values (M, F) of ``booster`` on feature rows ``X``.

    The same per-leaf-table TreeSHAP as the live :class:`ShapCache`, so ``analyze`` and the
    service explain with one implementation (it agrees with xgboost's ``pred_contribs`` to
    ~1e-9, tested). Row sums plus :func:`expected_value` equal the model's prediction.
    """
    return leafshap.tree_shap(booster, X)[0]


def expected_value(booster: xgb.Booster) -> float:
    """The SHAP base value (prediction of the 'empty coalition'); the same for every row."""
    row = np.zeros((1, booster.num_features()), dtype=np.float32)
    return float(_contribs(booster, row)[0, -1])


class ShapCache:
    """Running SHAP matrix of a growing booster on a fixed set of rows (the catalogue).

    Warm-start boosting only appends trees, and SHAP of a sum of trees is the sum of their
    SHAP, so after each update only trees ``[n_cached, n_trees)`` are explained. Pass
    ``rebuilt=True`` (or a changed ``generation``) when the booster was replaced rather than
    extended; a shrunken tree count also forces a full recomputation.

    ``engine="leaf"`` (default) uses the per-leaf pattern tables of
    :mod:`motex_stream.explain.leafshap`; ``engine="xgboost"`` uses ``pred_contribs`` (via
    model slicing, since xgboost refuses an iteration range not starting at 0). Both are exact
    TreeSHAP and agree to float round-off (~1e-7). The matrix is held transposed (features ×
    rows); :attr:`values` is its (rows × features) view.
    """

    def __init__(self, X: np.ndarray, *, engine: str = "leaf") -> None:
        if engine not in ("leaf", "xgboost"):
            raise ValueError(f"engine must be 'leaf' or 'xgboost', got {engine!r}")
        self.engine = engine
        self.X = np.asarray(X, dtype=np.float32)
        self._XT = np.ascontiguousarray(self.X.T)
        self._dm: xgb.DMatrix | None = None
        self._valuesT: np.ndarray | None = None
        self.expected_value: float = float("nan")
        self.n_trees = 0
        self.generation: int | None = None

    @property
    def values(self) -> np.ndarray | None:
        """SHAP (M, F) of the trees explained so far (a view; do not modify)."""
        return None if self._valuesT is None else self._valuesT.T

    def _xgb_contribs(self, booster: xgb.Booster) -> np.ndarray:
        if self._dm is None:
            self._dm = xgb.DMatrix(self.X, nthread=_NTHREAD)
        return booster.predict(self._dm, pred_contribs=True).astype(np.float64)

    def _explain(self, booster: xgb.Booster, start: int, end: int) -> tuple[np.ndarray, float]:
        """SHAP (F, M) of trees [start, end) and their share of the base value (no intercept)."""
        if self.engine == "leaf":
            tables = leafshap.leaf_tables(booster, start, end)
            outT = np.zeros(self._XT.shape, np.float64)
            leafshap.add_shap_t(tables, self._XT, outT)
            return outT, tables.expected
        c = self._xgb_contribs(
            booster if start == 0 and end == booster.num_boosted_rounds() else booster[start:end]
        )
        return np.ascontiguousarray(c[:, :-1].T), float(c[0, -1]) - leafshap.base_score(booster)

    def update(
        self, booster: xgb.Booster, *, rebuilt: bool = False, generation: int | None = None
    ) -> np.ndarray:
        """SHAP (M, F) of ``booster`` on the cached rows, reusing what is already known."""
        n = int(booster.num_boosted_rounds())
        stale = (
            self._valuesT is None
            or rebuilt
            or n < self.n_trees
            or (generation is not None and generation != self.generation)
        )
        if stale:
            valuesT, ev = self._explain(booster, 0, n)
            self._valuesT = valuesT
            self.expected_value = ev + leafshap.base_score(booster)
        elif n > self.n_trees:
            assert self._valuesT is not None
            addT, ev = self._explain(booster, self.n_trees, n)
            self._valuesT = self._valuesT + addT
            self.expected_value += ev
        self.n_trees = n
        self.generation = generation
        assert self._valuesT is not None
        return self._valuesT.T

    def restore(
        self, values_t: np.ndarray, expected_value: float, n_trees: int, generation: int | None
    ) -> None:
        """Take up a matrix (features × rows) saved with the count of trees it explains (a
        warm restart, ``stream.live.live_state``). Explaining those trees again costs a full
        pass and sums them in another order than the updates did, a difference in the last
        bits that the labels of borderline atoms can see."""
        values_t = np.asarray(values_t, dtype=np.float64)
        if values_t.shape != self._XT.shape:
            raise ValueError(f"SHAP matrix {values_t.shape}, rows need {self._XT.shape}")
        self._valuesT = np.ascontiguousarray(values_t)
        self.expected_value = float(expected_value)
        self.n_trees = int(n_trees)
        self.generation = generation


@dataclass
class AtomContributions:
    """Per-atom contribution values: negative = keeping the atom lowers Rwp (belongs to the
    motif in the data), positive = keeping it hurts the fit."""

    value: np.ndarray  # (N,) 0.5 · mean SHAP when kept − 0.5 · mean SHAP when removed
    spread_kept: np.ndarray  # (N,) std of SHAP_i over motifs keeping atom i
    spread_removed: np.ndarray  # (N,) std of SHAP_i over motifs removing atom i
    n_kept: np.ndarray  # (N,) motifs keeping atom i
    n_removed: np.ndarray  # (N,) motifs removing atom i
    size_shap_by_size: dict[int, float]  # motif size → mean SHAP of the size feature
    # a subsample of a larger catalogue (``steps.explain``): its sorted row indices and the
    # catalogue size; None: every row of the masks given was explained
    explained: np.ndarray | None = None
    n_catalogue: int | None = None

    @property
    def n_explained(self) -> int:
        """Motifs whose SHAP values the contribution values are means of."""
        return int(self.n_kept[0] + self.n_removed[0]) if len(self.n_kept) else 0

    @property
    def subsampled(self) -> bool:
        """Whether the values come from a subsample of the catalogue (see ``explained``)."""
        return self.explained is not None

    def ranking(self) -> np.ndarray:
        """Atom indices from most negative (most motif-like) to most positive; NaN last."""
        return np.argsort(np.where(np.isnan(self.value), np.inf, self.value), kind="stable")


@numba.njit(cache=True)
def _group_stats_t(sT, kept):  # pragma: no cover - compiled
    """Per row of ``sT`` (atoms × motifs): mean, std and count over kept / removed motifs."""
    n_atoms, n_rows = kept.shape
    out = np.full((6, n_atoms), np.nan)
    for a in range(n_atoms):
        s = sT[a]
        k = kept[a]
        nk = 0
        sk = 0.0
        sr = 0.0
        for r in range(n_rows):
            if k[r]:
                nk += 1
                sk += s[r]
            else:
                sr += s[r]
        nr = n_rows - nk
        mk = sk / nk if nk else np.nan
        mr = sr / nr if nr else np.nan
        vk = 0.0
        vr = 0.0
        for r in range(n_rows):
            if k[r]:
                vk += (s[r] - mk) ** 2
            else:
                vr += (s[r] - mr) ** 2
        out[0, a] = mk
        out[1, a] = np.sqrt(vk / nk) if nk else np.nan
        out[2, a] = nk
        out[3, a] = mr
        out[4, a] = np.sqrt(vr / nr) if nr else np.nan
        out[5, a] = nr
    return out


def atom_contributions(shap: np.ndarray, masks: np.ndarray) -> AtomContributions:
    """Contribution value of each permutable atom from SHAP values and the motifs' masks:
    ``0.5 · mean SHAP kept − 0.5 · mean SHAP removed`` (:data:`CONTRIBUTION_WEIGHT`, the
    paper's scale); the spreads are the plain standard deviations of the two groups.

    ``shap`` has N columns (atoms) or N + 1 (atoms, then size, as built by
    :func:`motex_stream.model.features`). An atom that is kept in every motif, or in none,
    has no contrast to measure: its value is NaN and a warning is logged.
    """
    s = np.asarray(shap, dtype=np.float64)
    m = np.atleast_2d(np.asarray(masks)) != 0
    n_atoms = m.shape[1]
    if s.shape[0] != m.shape[0] or s.shape[1] not in (n_atoms, n_atoms + 1):
        raise ValueError(f"shap {s.shape} does not match masks {m.shape} (need N or N + 1 columns)")
    # atoms × motifs, contiguous per atom (free when ``shap`` is a ShapCache view)
    sT = np.ascontiguousarray(s[:, :n_atoms].T)
    kept = np.ascontiguousarray(m.T)
    mean_k, std_k, n_k, mean_r, std_r, n_r = _group_stats_t(sT, kept)
    n_k = n_k.astype(np.int64)
    n_r = n_r.astype(np.int64)
    value = CONTRIBUTION_WEIGHT * (mean_k - mean_r)
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
        counts = np.bincount(sizes)
        sums = np.bincount(sizes, weights=s[:, n_atoms])
        for k in np.flatnonzero(counts):
            size_shap[int(k)] = float(sums[k] / counts[k])
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
