"""Live confidence intervals: the SHAP-mean sampling error plus a rotating surrogate ensemble.

The sampling error of the kept/removed SHAP means (``explain.confidence.sampling_error``) sees
only the finite catalogue behind each mean. What moves a live value from one analysis to the
next is mostly elsewhere: which fits the surrogate was trained on, its seed, and its own
warm-start history. The offline ensemble (``explain.confidence``) retrains a few surrogates,
far beyond the per-frame budget (≤ 25 % extra). So the live service keeps ``members`` small
surrogates of its own, warm-started like the main one, and refreshes **one member per frame**
(a rotation):

* the member is boosted ``rounds_per_frame`` more trees on a bootstrap resample of at most
  ``rows`` of the frame's fits (its own seed), or rebuilt from scratch on it (same squeezed
  hyperparameters as the main model's rebuild) when it has none yet, would pass the tree cap,
  or the main surrogate was rebuilt since (a drift: its history no longer applies);
* it is explained, incrementally as the main model, on a fixed seeded subset of at most
  ``rows`` catalogue motifs, and so is the main model (a slice of its cached SHAP), and the
  member's **deviation** from the main model's values on that subset is stored.

``sd² = sampling_se² + mean of the members' squared deviations``. A deviation is taken on the
frame the member was refreshed, against the main model of that same frame, so members that
were refreshed a few frames ago do not widen the interval when the structure changes; they
carry their noise level, not their stale values. What the spread covers: bootstrap of the
fits, training seed, warm-start history (members and the main model diverge over their
histories); what it does not: another catalogue or hyperparameter search (fixed at
preparation). A member's deviation holds its own variance plus the main model's, so it errs
on the wide side for one model, as the offline m-out-of-n ensemble does.

Cost per frame: one bootstrap training of ``rounds_per_frame`` trees on ``rows`` motifs and
their TreeSHAP on ``rows`` motifs; all members are built on the first frame (once).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import xgboost as xgb

from motex_stream.explain.contributions import ShapCache, atom_contributions
from motex_stream.model.gbdt import IncrementalSurrogate

log = logging.getLogger(__name__)

#: Seed offset of the live members (not the offline ensemble's, not the main model's).
_SEED_OFFSET = 104729
#: xgboost threads of a member: the main model's training uses the cores first.
_NTHREAD = 1


@dataclass
class _Member:
    booster: xgb.Booster | None
    shap: ShapCache
    generation: int = -1  # the main surrogate's generation the member was last built under
    deviation: np.ndarray | None = None  # member − main values on the subset, when refreshed
    refreshed: int = -1  # frame counter of the last refresh


class RotatingEnsemble:
    """``members`` warm-started surrogates, one refreshed per frame; see the module doc."""

    def __init__(
        self,
        features: np.ndarray,
        masks: np.ndarray,
        members: int,
        rows: int,
        seed: int,
    ) -> None:
        if members < 2:
            raise ValueError(f"a rotating ensemble needs at least 2 members, got {members}")
        n = len(masks)
        self.rows = max(2, min(int(rows), n))
        self.seed = int(seed)
        rng = np.random.default_rng((self.seed, _SEED_OFFSET))
        if self.rows < n:
            self.subset = np.sort(rng.choice(n, size=self.rows, replace=False))
        else:
            self.subset = np.arange(n)
        self._X = np.ascontiguousarray(features[self.subset], dtype=np.float32)
        self._masks = np.asarray(masks)[self.subset]
        self.members = [_Member(None, ShapCache(self._X)) for _ in range(int(members))]
        self._frame = 0

    def _train(
        self,
        member: _Member,
        k: int,
        surrogate: IncrementalSurrogate,
        X: np.ndarray,
        y: np.ndarray,
    ) -> bool:
        """Refresh member ``k`` on a bootstrap of (X, y); True when it was rebuilt."""
        seq = np.random.SeedSequence([self.seed, _SEED_OFFSET, k, self._frame])
        seed = int(seq.generate_state(1)[0] % 2**31)
        idx = np.random.default_rng(seed).integers(0, len(y), min(self.rows, len(y)))
        dtrain = xgb.DMatrix(X[idx], label=y[idx], nthread=_NTHREAD)
        rebuild = (
            member.booster is None
            or member.generation != surrogate.generation
            or member.booster.num_boosted_rounds() + surrogate.rounds_per_frame
            > surrogate.max_trees
        )
        if rebuild:
            hp = surrogate.rebuild_params()
            member.booster = xgb.train(
                hp.to_xgb_params(seed=seed, nthread=_NTHREAD), dtrain, hp.n_estimators
            )
            member.generation = surrogate.generation
        else:
            member.booster = xgb.train(
                surrogate.params.to_xgb_params(seed=seed, nthread=_NTHREAD),
                dtrain,
                surrogate.rounds_per_frame,
                xgb_model=member.booster,
            )
        return rebuild

    def _refresh(
        self,
        k: int,
        surrogate: IncrementalSurrogate,
        main_values: np.ndarray,
        X: np.ndarray,
        y: np.ndarray,
    ) -> None:
        member = self.members[k]
        rebuilt = self._train(member, k, surrogate, X, y)
        assert member.booster is not None
        shap = member.shap.update(member.booster, rebuilt=rebuilt)
        values = atom_contributions(shap, self._masks).value
        member.deviation = values - main_values
        member.refreshed = self._frame

    def update(
        self,
        surrogate: IncrementalSurrogate,
        main_shap: np.ndarray,
        X: np.ndarray,
        y: np.ndarray,
    ) -> np.ndarray:
        """Refresh this frame's member(s); return the ensemble's SD per atom.

        ``main_shap`` is the main model's SHAP over the rows it explains (the cache's view);
        ``X``/``y`` are this frame's refitted features and Rwp. Atoms whose contrast is
        undefined on the subset get NaN (their interval is then undefined: ``uncertain``).
        """
        t = time.perf_counter()
        main_values = atom_contributions(main_shap[self.subset], self._masks).value
        if self._frame == 0:  # the first frame builds every member, so frame 1 has a spread
            for k in range(len(self.members)):
                self._refresh(k, surrogate, main_values, X, y)
        else:
            self._refresh(self._frame % len(self.members), surrogate, main_values, X, y)
        self._frame += 1
        deviations = np.array([m.deviation for m in self.members if m.deviation is not None])
        log.debug("live ensemble refreshed in %.1f ms", 1000 * (time.perf_counter() - t))
        return np.sqrt(np.mean(deviations**2, axis=0))
