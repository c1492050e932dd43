"""Live confidence intervals: the SHAP-mean sampling error plus an ensemble of the serving model.

The sampling error of the kept/removed SHAP means (``explain.confidence.sampling_error``) sees
only the finite catalogue behind each mean. What moves a value from one analysis to the next
is mostly elsewhere: which fits the surrogate was trained on, its seed, its hyperparameters.
The offline intervals (``explain.confidence`` through ``steps.intervals``) measure that with
``ci_models`` surrogates, member ``b`` trained with the ``b``-th best point of the search on
an m-out-of-n bootstrap of the fits (m = ``ci_rows``) and explained on that resample; the SD
(ddof 1) of their contribution values is the ensemble's part of the interval.

Live, the same ensemble is built **whenever the serving surrogate is (re)built from scratch**,
on the frame it is built on, by the same code (:func:`~motex_stream.explain.confidence.
ensemble_contributions`, with the same members and seed as ``steps.intervals``, over every fit
of that frame): for a frame whose fits cover the catalogue it *is* the offline ensemble of
that frame. Its SD then serves every frame of that surrogate's life. The surrogate is
rebuilt at the tree cap (every few frames: the cap holds the searched model plus two frames
of warm starts) and, in line, on any frame whose data moved away from it (drift), so the SD
always comes from one frame, the serving model's own, and never from a mixture of older
ones. Rebuilds run in line on the frame they are trained on (issue 20: the rebuilt frame's
answer is then ``analyze``'s of that frame given the live search, intervals included), so
the ensemble is built in line from that frame's fits (:meth:`LiveEnsemble.update`), as on
the first frame and after a restart. Per-frame cost: nothing; per rebuild: ``ci_models`` trainings
and SHAP passes on ``ci_rows`` motifs (the offline ensemble's cost; 1.2 s on 10⁴ motifs and
one core).

Why not members warm-started frame by frame (as before issue 20): a member that boosts more
trees on each new frame (i) carries the frames since it was built, and (ii) converges to the
data like the main model, so the spread of differently tuned members shrinks frame by frame
(measured: 0.6 of the offline SD after two frames, 0.35 after four, against 1.0 at the
build); the rotating version, refreshed one member per frame across rebuilds, came out ~4×
too wide on a long series. Building members afresh each frame would cost ``ci_models`` full
trainings and SHAP passes per frame. And why the offline code and seed rather than a
bootstrap of the live's own: with four members the SD of one atom is itself uncertain by
~40 %, so two ensembles with different draws label borderline atoms differently (measured:
52-68 % of the labels the same as offline with equal median widths); the same draws on the
same fits give the same labels.

``sd² = sampling_se² + ensemble SD²``, with ``members − 1`` degrees of freedom for the t
quantile, as offline. What the spread covers: bootstrap of the fits, training seed, the
search's best points; what it does not: another catalogue (fixed at preparation).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from motex_stream.explain.confidence import ensemble_contributions
from motex_stream.model.hyperparameters import Hyperparameters

log = logging.getLogger(__name__)


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


class LiveEnsemble:
    """The interval ensemble of the serving surrogate (one SD per atom); see the module doc.

    ``masks``: the catalogue; ``params``: the members' hyperparameters (:func:`member_params`);
    ``rows``: motifs per bootstrap resample (``ci_rows``); ``seed``: the analysis seed (the
    offline ensemble's, so the same fits give the same members).
    """

    def __init__(
        self, masks: np.ndarray, params: Sequence[Hyperparameters], rows: int, seed: int
    ) -> None:
        if len(params) < 2:
            raise ValueError(f"an ensemble needs at least 2 members, got {len(params)}")
        self.rows = int(rows)
        self.seed = int(seed)
        self.params = list(params)
        # (xgboost parameters, rounds) per member, exactly as steps.intervals builds them
        self.members = [(p.to_xgb_params(seed=self.seed), p.n_estimators) for p in self.params]
        self._masks = masks
        self.generation: int | None = None  # the surrogate generation the SD was built for
        self.sd: np.ndarray | None = None
        self.values: np.ndarray | None = None  # (members, atoms) of that build

    def build(self, y: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """Contribution values (members, atoms) of the members trained on one frame's fits
        ``y`` of catalogue rows ``ids`` (the offline ensemble's code, seed and resamples)."""
        masks = np.asarray(self._masks[np.asarray(ids)], dtype=bool)
        return ensemble_contributions(
            np.asarray(y, float), masks, self.members, self.seed, self.rows
        )

    def update(self, generation: int, y: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """The ensemble's SD per atom for a frame served by surrogate ``generation``; built
        from this frame's fits ``y`` (catalogue rows ``ids``) on the first frame of each
        generation (the frame the surrogate was rebuilt on, or the first after a start), kept
        for the generation's other frames. Atoms whose contrast is undefined in a member's
        resample get NaN (their interval is then undefined: ``uncertain``)."""
        if generation != self.generation or self.sd is None:
            t = time.perf_counter()
            values = self.build(y, ids)
            self.values, self.generation = values, generation
            self.sd = np.std(values, axis=0, ddof=1)
            log.debug(
                "live ensemble of generation %d in %.1f ms",
                generation,
                1000 * (time.perf_counter() - t),
            )
        assert self.sd is not None
        return self.sd
