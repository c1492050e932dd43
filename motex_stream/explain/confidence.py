"""Confidence intervals and keep/remove/uncertain labels for atom contribution values.

A contribution value moves with three things: which motifs were sampled and fitted, how the
surrogate was trained (seed, validation slice, row/column subsampling), and the finite number
of motifs behind each kept/removed SHAP mean. Two cheap, seeded estimates cover them:

* **Ensemble spread.** ``n_models`` extra surrogates, each trained with the hyperparameters
  and tree count the search already chose (no new search) on a bootstrap resample of the
  fitted motifs, with its own xgboost seed, and explained on its resample with the same
  leaf-table TreeSHAP, giving one contribution vector per model. Member ``b`` uses the
  ``b``-th best hyperparameter point the search already evaluated (by CV MAE), so the
  uncertainty of the search is sampled too, without a new search. To stay cheap on large
  catalogues a resample holds at most ``rows`` motifs (an m-out-of-n bootstrap); the spread
  is *not* scaled down to the full catalogue, which errs on the wide side for the data part
  and makes up for what a few members cannot see (another catalogue, another search).
  Coverage is measured by ``benchmarks/bench_confidence.py``.
* **Sampling error of the means.** ``sqrt(sd_kept² / n_kept + sd_removed² / n_removed)`` of
  the main model's SHAP values: the standard error of a difference of two means.

The two variances are added and the interval is ``value ± z · sd`` with ``z`` the normal
quantile of the requested level (two-sided). An atom is ``keep`` when its whole interval lies
below 0, ``remove`` when above 0, else ``uncertain`` (also for an undefined, NaN value).
Everything is seeded, so the same seed gives the same intervals.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import xgboost as xgb

from motex_stream.explain.contributions import AtomContributions, atom_contributions, shap_values

KEEP = "keep"
REMOVE = "remove"
UNCERTAIN = "uncertain"

#: Seed offset of the ensemble members, so they never reuse the main model's seed.
_SEED_OFFSET = 7919


@dataclass
class ContributionIntervals:
    """Interval and label per atom, and how they were obtained."""

    low: np.ndarray  # (N,)
    high: np.ndarray  # (N,)
    label: list[str]  # (N,) keep / remove / uncertain
    level: float
    n_models: int  # ensemble members besides the main model
    ensemble_sd: np.ndarray  # (N,) spread of the ensemble's contribution values
    sampling_se: np.ndarray  # (N,) standard error of the kept − removed means

    def counts(self) -> dict[str, int]:
        return {k: self.label.count(k) for k in (KEEP, REMOVE, UNCERTAIN)}


def sampling_error(c: AtomContributions) -> np.ndarray:
    """Standard error of each contribution value from the spread of its two SHAP means."""
    nk = np.maximum(np.asarray(c.n_kept, dtype=float), 1.0)
    nr = np.maximum(np.asarray(c.n_removed, dtype=float), 1.0)
    return np.sqrt(np.asarray(c.spread_kept) ** 2 / nk + np.asarray(c.spread_removed) ** 2 / nr)


def labels(low: np.ndarray, high: np.ndarray) -> list[str]:
    """keep (interval < 0), remove (interval > 0), else uncertain (NaN included)."""
    out = []
    for lo, hi in zip(np.asarray(low, float), np.asarray(high, float), strict=True):
        if np.isfinite(hi) and hi < 0:
            out.append(KEEP)
        elif np.isfinite(lo) and lo > 0:
            out.append(REMOVE)
        else:
            out.append(UNCERTAIN)
    return out


def interval(
    value: np.ndarray, sd: np.ndarray, level: float
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``value ± z(level) · sd`` and its labels."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be within (0, 1), got {level}")
    z = NormalDist().inv_cdf(0.5 + level / 2.0)
    v = np.asarray(value, dtype=float)
    half = z * np.asarray(sd, dtype=float)
    low, high = v - half, v + half
    return low, high, labels(low, high)


def ensemble_contributions(
    X: np.ndarray,
    y: np.ndarray,
    masks: np.ndarray,
    members: list[tuple[dict, int]],
    seed: int,
    rows: int | None = None,
) -> np.ndarray:
    """Contribution vectors (members, N) of surrogates trained on bootstrap resamples of
    ``rows`` motifs (default: all), each explained on its own resample.

    ``members`` holds one (xgboost parameters, tree count) per surrogate: the hyperparameter
    points the search already evaluated, best first. Member ``b`` uses ``seed + offset + b``
    for its resample and its xgboost seed.
    """
    X = np.asarray(X, dtype=np.float32)
    y = np.asarray(y, dtype=float)
    m = np.asarray(masks)
    n = len(y) if rows is None else max(2, min(int(rows), len(y)))
    out = np.full((len(members), m.shape[1]), np.nan)
    for b, (xgb_params, n_trees) in enumerate(members):
        member_seed = (seed + _SEED_OFFSET + b) % 2**32
        idx = np.random.default_rng(member_seed).integers(0, len(y), n)
        params = {**xgb_params, "seed": member_seed}
        dtrain = xgb.DMatrix(X[idx], label=y[idx], nthread=int(params.get("nthread", 2)))
        booster = xgb.train(params, dtrain, num_boost_round=max(1, int(n_trees)))
        out[b] = atom_contributions(shap_values(booster, X[idx]), m[idx]).value
    return out


def contribution_intervals(
    contributions: AtomContributions,
    X: np.ndarray,
    y: np.ndarray,
    masks: np.ndarray,
    members: list[tuple[dict, int]],
    *,
    level: float,
    seed: int,
    rows: int | None = None,
) -> ContributionIntervals:
    """Intervals around ``contributions.value`` (see the module doc); fewer than two
    ``members`` use the sampling error alone."""
    se = sampling_error(contributions)
    n_models = len(members)
    if n_models >= 2:
        ens = ensemble_contributions(X, y, masks, members, seed, rows)
        ens_sd = np.std(ens, axis=0, ddof=1)
    else:
        ens_sd = np.zeros_like(se)
    sd = np.sqrt(ens_sd**2 + se**2)
    low, high, lab = interval(contributions.value, sd, level)
    return ContributionIntervals(low, high, lab, level, n_models, ens_sd, se)
