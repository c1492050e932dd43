"""The live analyzer as it behaved before issue 20's in-line rebuilds (2a15eb6^), for
``bench_live_parity.py``'s baseline column only.

Before issue 20 a rebuild at the tree cap was trained one frame ahead: when the *next* frame
would pass the cap, the warm-start protocol's model (the frame's 80 % split and seed,
:meth:`IncrementalSurrogate._fresh`) was trained on this frame's refits, its interval
members built from the same refits, and both were swapped in at the next frame, under that
frame's warm-start trees; a drifted frame was rebuilt in line by the same protocol. The
package no longer does this (the rebuilt frame now gets its own offline model), so the
benchmark keeps the old behaviour here, to measure the new one against it in the same run.

The old service trained the model in a background thread; the swap frame was fixed (the
next update, waiting for the thread if needed), so the answers did not depend on the
thread's timing. This module builds it synchronously at the same point, which gives the
same answers without the thread (SHAP of the swapped-in model is recomputed in full at the
swap instead of ahead: equal to float round-off).
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import xgboost as xgb

from motex_stream.analysis.settings import LiveModelSettings
from motex_stream.model.features import as_features
from motex_stream.model.hyperparameters import Hyperparameters
from motex_stream.model.incremental import FrameFit, IncrementalSurrogate
from motex_stream.model.training import seeded_split
from motex_stream.stream.live.analyzer import MotexFrameAnalyzer
from motex_stream.stream.live.live_intervals import LiveEnsemble


class AheadEnsemble(LiveEnsemble):
    """A live ensemble that can be given a generation's members ahead of its first frame
    (the rebuild frame's refits, as the old rebuild thread did)."""

    def __init__(
        self, masks: np.ndarray, params: Sequence[Hyperparameters], rows: int, seed: int
    ) -> None:
        super().__init__(masks, params, rows, seed)
        self.ahead: dict[int, np.ndarray] = {}  # generation -> members' values

    def prepare(self, generation: int, y: np.ndarray, ids: np.ndarray) -> None:
        """Build generation ``generation``'s members from the fits ``y`` of rows ``ids``."""
        self.ahead[generation] = self.build(y, ids)

    def update(self, generation: int, y: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """The SD of the members built ahead for ``generation`` when there are some, else
        :class:`LiveEnsemble`'s (built from this frame)."""
        values = self.ahead.pop(generation, None)
        if values is not None and generation != self.generation:
            self.values, self.generation = values, generation
            self.sd = np.std(values, axis=0, ddof=1)
        return super().update(generation, y, ids)


class AheadSurrogate(IncrementalSurrogate):
    """:class:`IncrementalSurrogate` with the pre-issue-20 cap rebuild: trained on the frame
    before the cap would be passed, swapped in at the next frame under its warm-start trees
    (module doc). ``ensemble``: the analyzer's, given the new generation's members ahead."""

    ensemble: AheadEnsemble | None = None
    _ahead: tuple[xgb.Booster, int] | None = None

    def update(
        self,
        X: np.ndarray,
        y: np.ndarray,
        rows: np.ndarray | None = None,
        *,
        rebuild: bool = False,
    ) -> FrameFit:
        swapped = self._ahead is not None
        if self._ahead is not None:
            self.booster, self.generation = self._ahead
            self.base_trees = int(self.booster.num_boosted_rounds())
            self._ahead = None
        frame_seed = self.seed + self.frame
        fit = super().update(X, y, rows, rebuild=rebuild)
        fit.rebuilt = fit.rebuilt or swapped
        if "drift_rebuild" not in fit.timings and (
            self.n_trees + self.rounds_per_frame > self.max_trees
        ):
            # the next frame would pass the cap: the old service started the rebuild here
            features = as_features(X)
            target = np.asarray(y, dtype=np.float64).ravel()
            fit_idx, _ = seeded_split(len(target), self.holdout_fraction, frame_seed)
            booster = self._fresh(features[fit_idx], target[fit_idx], frame_seed)
            self._ahead = (booster, self.generation + 1)
            if self.ensemble is not None:
                ids = np.arange(len(target)) if rows is None else np.asarray(rows)
                self.ensemble.prepare(self.generation + 1, target, ids)
        return fit


def as_baseline(analyzer: MotexFrameAnalyzer) -> MotexFrameAnalyzer:
    """``analyzer`` turned into the pre-issue-20 analyzer (module doc): its surrogate
    replaced by an :class:`AheadSurrogate` restored from the same state, its interval
    ensemble by an :class:`AheadEnsemble`, and its own rebuild decision (in-line rebuilds
    of the rebuilt frame's offline model) switched off on this instance."""
    with tempfile.TemporaryDirectory() as tmp:
        analyzer.surrogate.save(Path(tmp))
        surrogate = AheadSurrogate.load(Path(tmp))
    surrogate.rounds_per_frame = analyzer.surrogate.rounds_per_frame
    assert isinstance(surrogate, AheadSurrogate)
    analyzer.surrogate = surrogate  # trainer None: rebuilds by the warm-start protocol
    analyzer._rebuild_due = lambda run: False  # type: ignore[method-assign]
    ensure = analyzer._ensure_ensemble

    def ensure_ahead(run: LiveModelSettings) -> None:
        ensure(run)
        ens = analyzer._ensemble
        if ens is not None and not isinstance(ens, AheadEnsemble):
            analyzer._ensemble = AheadEnsemble(analyzer.catalogue, ens.params, ens.rows, ens.seed)
        surrogate.ensemble = analyzer._ensemble  # type: ignore[assignment]

    analyzer._ensure_ensemble = ensure_ahead  # type: ignore[method-assign]
    return analyzer
