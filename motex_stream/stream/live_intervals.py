"""Live confidence intervals: the SHAP-mean sampling error plus an ensemble of the serving model.

The sampling error of the kept/removed SHAP means (``explain.confidence.sampling_error``) sees
only the finite catalogue behind each mean. What moves a value from one analysis to the next
is mostly elsewhere: which fits the surrogate was trained on, its seed, its hyperparameters.
The offline intervals (``explain.confidence`` through ``steps.intervals``) measure that with
``ci_models`` surrogates, member ``b`` trained with the ``b``-th best point of the search on
an m-out-of-n bootstrap of the fits (m = ``ci_rows``) and explained on that resample; the SD
(ddof 1) of their contribution values is the ensemble's part of the interval.

Live, the same ensemble is built **whenever the serving surrogate is (re)built from scratch**,
on the frame it is built on and with the same recipe (the same member hyperparameters, an
m-out-of-n bootstrap of the catalogue weighting that frame's fits, explained in sample); its
SD then serves every frame of that surrogate's life. The surrogate is rebuilt at the tree cap
(every few frames: the cap holds the searched model plus two frames of warm starts) and, in
line, on any frame whose data moved away from it (drift), so the SD always comes from one
frame, the serving model's own, and never from a mixture of older ones. The build runs in the
rebuild's background thread (:meth:`LiveEnsemble.prepare`, called by the surrogate with the
data it was rebuilt on) and is adopted on the frame the model is swapped in; on the first
frame, after a restart and on a drift it is built in line. Per-frame cost: nothing.

Why not members warm-started frame by frame (as before issue 20): a member that boosts more
trees on each new frame (i) carries the frames since it was built, and (ii) converges to the
data like the main model, so the spread of differently tuned members shrinks frame by frame
(measured: 0.6 of the offline SD after two frames, 0.35 after four, against 1.0 at the
build); the rotating version, refreshed one member per frame across rebuilds, came out ~4×
too wide on a long series. Building members afresh each frame would cost ``ci_models`` full
trainings and SHAP passes per frame.

``sd² = sampling_se² + ensemble SD²``, with ``members − 1`` degrees of freedom for the t
quantile, as offline. What the spread covers: bootstrap of the fits, training seed, the
search's best points; what it does not: another catalogue (fixed at preparation).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import xgboost as xgb

from motex_stream.explain.contributions import ShapCache, atom_contributions
from motex_stream.model.gbdt import Hyperparameters

log = logging.getLogger(__name__)

#: Seed offset of the live members (not the offline ensemble's, not the main model's).
_SEED_OFFSET = 104729
#: xgboost threads of a member: the main model's training uses the cores first.
_NTHREAD = 1


def member_params(
    search: Sequence[dict[str, Any]], fallback: Hyperparameters, members: int
) -> list[Hyperparameters]:
    """Hyperparameters of each member: the search's points by CV MAE, best first, in turn
    (the best point only: ``fallback``, when there is no search trace).

    The same choice as the offline intervals (``steps.intervals``), so the live and the
    offline ensemble are ensembles of the same models.
    """
    points = sorted(search, key=lambda h: h.get("cv_mae", np.inf))
    params = [Hyperparameters.from_dict(h) for h in points] or [fallback]
    return [params[b % len(params)] for b in range(int(members))]


def _seed(*key: int) -> int:
    return int(np.random.SeedSequence([int(k) for k in key]).generate_state(1)[0] % 2**31)


class LiveEnsemble:
    """The interval ensemble of the serving surrogate (one SD per atom); see the module doc."""

    def __init__(
        self,
        features: np.ndarray,
        masks: np.ndarray,
        params: Sequence[Hyperparameters],
        rows: int,
        seed: int,
    ) -> None:
        if len(params) < 2:
            raise ValueError(f"an ensemble needs at least 2 members, got {len(params)}")
        self.rows = max(2, min(int(rows), len(masks)))
        self.seed = int(seed)
        self.params = list(params)
        self._features = features  # the catalogue's
        self._masks = np.asarray(masks)
        self.generation: int | None = None  # the surrogate generation the SD was built for
        self.sd: np.ndarray | None = None
        self.values: np.ndarray | None = None  # (members, atoms) at the build
        self._lock = threading.Lock()
        self._prepared: dict[int, np.ndarray] = {}

    def build(self, generation: int, X: np.ndarray, y: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """Contribution values (members, atoms) of the members trained on ``X``/``y`` (a
        frame's fits of catalogue rows ``ids``), each on the frame's fits weighted by its own
        m-out-of-n bootstrap of the catalogue and explained on that resample (one thread)."""
        X = np.asarray(X)
        y = np.asarray(y, dtype=float)
        ids = np.asarray(ids)
        out = np.full((len(self.params), self._masks.shape[1]), np.nan)
        for k, hp in enumerate(self.params):
            draw = np.random.default_rng(_seed(self.seed, _SEED_OFFSET, k, generation)).integers(
                0, len(self._masks), self.rows
            )
            weight = np.bincount(draw, minlength=len(self._masks)).astype(float)[ids]
            keep = weight > 0
            if keep.sum() < 2:  # a frame that refits none of the resample: unweighted
                keep, weight = np.ones(len(y), bool), np.ones(len(y))
            seed = _seed(self.seed, _SEED_OFFSET, 1, k, generation)
            booster = xgb.train(
                hp.to_xgb_params(seed=seed, nthread=_NTHREAD),
                xgb.DMatrix(X[keep], label=y[keep], weight=weight[keep], nthread=_NTHREAD),
                max(1, int(hp.n_estimators)),
            )
            rows = np.sort(draw)
            cache = ShapCache(np.ascontiguousarray(self._features[rows], dtype=np.float32))
            cache.prepare(booster, generation)  # one core
            shap = cache.update(booster, rebuilt=True, generation=generation)
            out[k] = atom_contributions(shap, self._masks[rows]).value
        return out

    def prepare(self, generation: int, X: np.ndarray, y: np.ndarray, ids: np.ndarray) -> None:
        """Build the ensemble of a new surrogate (generation ``generation``, trained on
        ``X``/``y``) ahead, e.g. in the surrogate's rebuild thread; :meth:`update` adopts it on
        the frame the surrogate is swapped in. Touches nothing the foreground reads."""
        values = self.build(generation, X, y, ids)
        with self._lock:
            self._prepared[generation] = values

    def update(self, generation: int, X: np.ndarray, y: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """The ensemble's SD per atom for a frame served by surrogate ``generation``; built
        from this frame's ``X``/``y`` (catalogue rows ``ids``) when no build of that generation
        is ready (first frame, restart, drift). Atoms whose contrast is undefined in a
        member's resample get NaN (their interval is then undefined: ``uncertain``)."""
        with self._lock:  # a build for a later generation may already be waiting: keep it
            ready = self._prepared.pop(generation, None)
            for g in [g for g in self._prepared if g < generation]:
                del self._prepared[g]
        if generation != self.generation or self.sd is None:
            t = time.perf_counter()
            values = ready if ready is not None else self.build(generation, X, y, ids)
            self.values, self.generation = values, generation
            self.sd = np.std(values, axis=0, ddof=1)
            log.debug(
                "live ensemble of generation %d in %.1f ms",
                generation,
                1000 * (time.perf_counter() - t),
            )
        assert self.sd is not None
        return self.sd
