"""Confirming pass: does the fit need each ``keep`` atom next to the motif the keep set forms?

Why: a contribution value averages an atom's effect over the catalogue's random motifs, most of
which are half-built mixtures. In a starting model with fragments of the motif (the 8- and
9-W lacunary pieces of the 48/72-W Keggin crystals), a fragment atom helps *those* mixtures —
it adds Keggin-like distances to a motif missing some — so its value is confidently negative
although the fit gets worse when it is added to the motif actually found. The interval of
that value cannot show it: the bias is in the estimator, and every seed agrees on it.

This pass asks the counterfactual question directly, with fits rather than a surrogate:

1. **centre** — the keep set pruned by backward elimination: while removing one atom lowers
   the motif's Rwp, remove the one that lowers it most (deterministic; at most k(k+1)/2 fits
   for k keep atoms);
2. **contexts** — ``n_contexts`` seeded perturbations of the centre, each centre atom left out
   with probability :data:`DROP`, so no atom is judged against one motif alone;
3. **paired effect** — for every keep atom and context, Rwp with the atom minus Rwp without it
   (common contexts: the context's own quality cancels); its mean and a Student-t interval
   over the contexts at the analysis' confidence level.

An atom stays ``keep`` only when that interval lies below 0 (adding it lowers Rwp in the
neighbourhood of the found motif). Otherwise it is *demoted* to ``uncertain`` — never flipped
to ``remove``: the pass sees only motifs near one centre, which is too narrow a view to call an
atom harmful, but enough to withhold a confident keep the fits do not support.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
from scipy import stats

from motex_stream.explain.confidence import (
    KEEP,
    UNCERTAIN,
    ContributionIntervals,
    KeepConfirmation,
)

#: Probability that a centre atom is left out of a context. Small enough that contexts stay
#: near the found motif (the question asked), large enough that each atom is judged against
#: many motifs, not one.
DROP = 0.2

#: Fits Rwp of a batch of bool masks (n, N) to the data being explained.
FitRwp = Callable[[np.ndarray], np.ndarray]


def prune_to_centre(keep: np.ndarray, fit_rwp: FitRwp) -> tuple[np.ndarray, float, int]:
    """Backward elimination from the keep set: the centre mask, its Rwp and the fits used."""
    centre = keep.copy()
    rwp = float(fit_rwp(centre[None])[0])
    n_fits = 1
    while centre.sum() > 1:
        members = np.flatnonzero(centre)
        trials = np.repeat(centre[None], len(members), axis=0)
        trials[np.arange(len(members)), members] = False
        trial_rwp = fit_rwp(trials)
        n_fits += len(members)
        best = int(np.argmin(trial_rwp))
        if not trial_rwp[best] < rwp:
            break
        centre[members[best]] = False
        rwp = float(trial_rwp[best])
    return centre, rwp, n_fits


def keep_confirmation(
    labels: list[str] | np.ndarray,
    fit_rwp: FitRwp,
    n_contexts: int,
    level: float,
    seed: int,
) -> KeepConfirmation:
    """Paired test of every ``keep`` atom around the pruned keep set (see the module doc)."""
    if n_contexts < 2:
        raise ValueError("the confirming pass needs at least 2 contexts")
    label = np.asarray(labels)
    atoms = np.flatnonzero(label == KEEP)
    n_atoms = len(label)
    keep = np.zeros(n_atoms, dtype=bool)
    keep[atoms] = True
    if not len(atoms):
        empty = np.empty(0)
        return KeepConfirmation(
            atoms, empty, empty, empty, np.empty(0, bool), keep, float("nan"), n_contexts, 0
        )
    centre, centre_rwp, n_fits = prune_to_centre(keep, fit_rwp)
    rng = np.random.default_rng(seed)
    contexts = centre[None] & (rng.random((n_contexts, n_atoms)) >= DROP)
    with_atom = np.repeat(contexts[None], len(atoms), axis=0)  # (k, contexts, N)
    without = with_atom.copy()
    with_atom[np.arange(len(atoms)), :, atoms] = True
    without[np.arange(len(atoms)), :, atoms] = False
    rwp_with = fit_rwp(with_atom.reshape(-1, n_atoms))
    rwp_without = fit_rwp(without.reshape(-1, n_atoms))
    n_fits += 2 * len(atoms) * n_contexts
    diff = (rwp_with - rwp_without).reshape(len(atoms), n_contexts)
    effect = diff.mean(axis=1)
    half = stats.t.ppf(0.5 + level / 2, n_contexts - 1) * diff.std(axis=1, ddof=1)
    half /= np.sqrt(n_contexts)
    low, high = effect - half, effect + half
    return KeepConfirmation(
        atoms=atoms,
        effect=effect,
        low=low,
        high=high,
        confirmed=high < 0,
        centre=centre,
        centre_rwp=centre_rwp,
        n_contexts=n_contexts,
        n_fits=n_fits,
    )


def demote(labels: list[str], conf: KeepConfirmation) -> list[str]:
    """``labels`` with every keep atom the pass did not confirm labelled ``uncertain``."""
    out = list(labels)
    for i in conf.demoted:
        out[int(i)] = UNCERTAIN
    return out


def apply_confirmation(ci: ContributionIntervals, conf: KeepConfirmation) -> ContributionIntervals:
    """``ci`` relabelled by :func:`demote`, with the confirmation attached.

    The interval columns stay those of the contribution value (they bound the value, and the
    value is still negative); the pass's own measurement, a change of Rwp, is reported beside
    them (:attr:`ContributionIntervals.confirmation`)."""
    return replace(ci, label=demote(ci.label, conf), confirmation=conf)
