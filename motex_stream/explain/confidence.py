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
  and makes up for what a few members cannot see (another catalogue, another search):
  measured, scaling it down makes the intervals under-cover (:func:`combined_sd`).
* **Sampling error of the means.** ``0.5 · sqrt(sd_kept² / n_kept + sd_removed² / n_removed)``
  of the main model's SHAP values: the standard error of 0.5 × a difference of two means.

The two variances are added and the interval is ``value ± q · sd``. ``q`` is Student's t
quantile of the requested level (two-sided) at the Welch–Satterthwaite degrees of freedom of
the sum (:func:`welch_df`): a spread estimated from four members has three degrees of freedom,
and the normal quantile with it covers only ~80 % instead of 90 % (measured before this
correction: 83.5 % over 20 seeds). It is a consequence of the member count, not a tuned
factor. Coverage is measured by ``benchmarks/bench_confidence.py``. An atom is ``keep`` when
its whole interval lies below 0, ``remove`` when above 0, else ``uncertain`` (also for an
undefined, NaN value). Everything is seeded, so the same seed gives the same intervals.

The second pass for the atoms left uncertain (:func:`adaptive_catalogue`,
:func:`merge_second_pass`, driven by :func:`motex_stream.analysis.steps.refine_intervals`)
fits motifs in which those atoms vary around the confident ``keep`` set.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import xgboost as xgb
from scipy.stats import t as student_t

from motex_stream.catalogue.storage import unique_row_indices
from motex_stream.explain import leafshap
from motex_stream.explain.contributions import (
    CONTRIBUTION_WEIGHT,
    AtomContributions,
    atom_contributions,
)
from motex_stream.model.features import features

KEEP = "keep"
REMOVE = "remove"
UNCERTAIN = "uncertain"

#: Seed offset of the ensemble members, so they never reuse the main model's seed.
_SEED_OFFSET = 7919

#: Ensemble members trained and explained at once, each on its own thread (offline
#: ``analyze`` and the live rebuild both go through :func:`ensemble_contributions`). Why 2:
#: the target host has two cores and a member trains on one xgboost thread
#: (:data:`motex_stream.model.features.TRAIN_NTHREAD`, no OpenMP team to spin-wait) and
#: explains its resample with the serial SHAP kernel, so two members fill the two cores;
#: xgboost's training and the compiled SHAP release the GIL, the leaf tables' JSON parsing
#: (~15 % of a member) does not. Members are independent (own resample, own seed) and are
#: stored in member order, so the values are byte-identical to one at a time (tested);
#: 1 trains them one after the other with numba's parallel SHAP.
ENSEMBLE_WORKERS = 2

#: Second pass: chance that one of its motifs keeps an atom, by the atom's first-pass label.
#: The confident ``keep`` atoms stay (nearly) always on, so each motif asks "does this
#: uncertain atom help the motif that is already known?"; the uncertain ones are a coin flip,
#: so they are kept and removed equally often and nearly independently of each other; the
#: confident ``remove`` atoms are mostly off. A small chance of the opposite keeps every atom
#: varying, so the surrogate never sees a constant column (its SHAP would be zero there).
ADAPTIVE_KEEP_PROBABILITY = {KEEP: 0.9, UNCERTAIN: 0.5, REMOVE: 0.1}


@dataclass(frozen=True)
class KeepConfirmation:
    """What the confirming pass (:mod:`motex_stream.explain.confirmation`) measured for the
    atoms the first pass labelled ``keep``; kept here, beside the intervals that carry it."""

    atoms: np.ndarray  # (k,) indices among the permutable atoms
    effect: np.ndarray  # (k,) mean Rwp change when the atom is added to a context
    low: np.ndarray  # (k,) interval of the effect
    high: np.ndarray  # (k,)
    confirmed: np.ndarray  # (k,) bool: high < 0
    centre: np.ndarray  # (N,) bool: the pruned keep set the contexts perturb
    centre_rwp: float
    n_contexts: int
    n_fits: int

    @property
    def demoted(self) -> np.ndarray:
        """Indices (among the permutable atoms) of keep atoms the pass did not confirm."""
        return self.atoms[~self.confirmed]


@dataclass
class ContributionIntervals:
    """Interval and label per atom, and how they were obtained."""

    low: np.ndarray  # (N,)
    high: np.ndarray  # (N,)
    label: list[str]  # (N,) keep / remove / uncertain
    level: float
    n_models: int  # ensemble members besides the main model
    ensemble_sd: np.ndarray  # (N,) spread of the ensemble's contribution values
    sampling_se: np.ndarray  # (N,) standard error of the value (0.5·kept − 0.5·removed means)
    df: np.ndarray | None = None  # (N,) degrees of freedom of the t quantile; None: normal
    # second pass (:func:`merge_second_pass`): which atoms it re-estimated, their value in
    # its motifs (NaN elsewhere), the first pass's intervals and how many motifs it fitted
    refined: np.ndarray | None = None  # (N,) bool
    refined_value: np.ndarray | None = None  # (N,)
    first_pass: ContributionIntervals | None = None
    adaptive_motifs: int = 0
    # confirming pass (:func:`motex_stream.explain.confirmation.apply_confirmation`): the
    # paired fits behind every first-pass keep; the unconfirmed ones are labelled uncertain
    confirmation: KeepConfirmation | None = None

    def demoted(self) -> np.ndarray:
        """(N,) bool: atoms whose confident ``keep`` the confirming pass did not confirm."""
        out = np.zeros(len(self.label), dtype=bool)
        if self.confirmation is not None:
            out[self.confirmation.demoted] = True
        return out

    def counts(self) -> dict[str, int]:
        return {k: self.label.count(k) for k in (KEEP, REMOVE, UNCERTAIN)}

    def resolved(self) -> int:
        """Atoms the second pass moved from ``uncertain`` to ``keep`` or ``remove``."""
        if self.refined is None:
            return 0
        return sum(1 for i in np.flatnonzero(self.refined) if self.label[i] != UNCERTAIN)


def sampling_error(c: AtomContributions) -> np.ndarray:
    """Standard error of each contribution value from the spread of its two SHAP means:
    the value weighs each mean by :data:`CONTRIBUTION_WEIGHT` (0.5), so is its error."""
    nk = np.maximum(np.asarray(c.n_kept, dtype=float), 1.0)
    nr = np.maximum(np.asarray(c.n_removed, dtype=float), 1.0)
    return CONTRIBUTION_WEIGHT * np.sqrt(
        np.asarray(c.spread_kept) ** 2 / nk + np.asarray(c.spread_removed) ** 2 / nr
    )


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
    value: np.ndarray,
    sd: np.ndarray,
    level: float,
    df: np.ndarray | float | None = None,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``value ± q · sd`` and its labels: ``q`` is the two-sided normal quantile of ``level``,
    or Student's t quantile with ``df`` degrees of freedom (per atom) when ``df`` is given,
    because an ``sd`` estimated from a handful of surrogates is itself uncertain."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be within (0, 1), got {level}")
    v = np.asarray(value, dtype=float)
    if df is None:
        q: np.ndarray | float = NormalDist().inv_cdf(0.5 + level / 2.0)
    else:
        q = student_t.ppf(0.5 + level / 2.0, np.broadcast_to(np.asarray(df, float), v.shape))
    half = q * np.asarray(sd, dtype=float)
    low, high = v - half, v + half
    return low, high, labels(low, high)


def ensemble_contributions(
    y: np.ndarray,
    masks: np.ndarray,
    members: list[tuple[dict, int]],
    seed: int,
    rows: int | None = None,
    workers: int | None = None,
) -> np.ndarray:
    """Contribution vectors (members, N) of surrogates trained on bootstrap resamples of
    ``rows`` motifs (default: all), each explained on its own resample.

    Only a resample's features are built (``masks[idx]``), never the whole catalogue's: a
    10^7-motif catalogue would otherwise cost its float32 feature matrix (1 GB for 24 atoms).

    ``members`` holds one (xgboost parameters, tree count) per surrogate: the hyperparameter
    points the search already evaluated, best first. Member ``b`` uses ``seed + offset + b``
    for its resample and its xgboost seed. ``workers`` members are trained and explained at
    once (default :data:`ENSEMBLE_WORKERS`); the result does not depend on it.
    """
    y = np.asarray(y, dtype=float)
    n = len(y) if rows is None else max(2, min(int(rows), len(y)))
    out = np.full((len(members), masks.shape[1]), np.nan)
    workers = max(1, min(ENSEMBLE_WORKERS if workers is None else int(workers), len(members)))
    jobs = [(b, params, n_trees) for b, (params, n_trees) in enumerate(members)]
    if workers == 1:
        for b, params, n_trees in jobs:
            out[b] = _member_value(y, masks, n, seed, b, params, n_trees, serial=False)
        return out

    def member(job: tuple[int, dict, int]) -> np.ndarray:
        b, params, n_trees = job
        return _member_value(y, masks, n, seed, b, params, n_trees, serial=True)

    with ThreadPoolExecutor(workers, thread_name_prefix="motex-ensemble") as pool:
        for b, value in enumerate(pool.map(member, jobs)):  # member order
            out[b] = value
    return out


def _member_value(
    y: np.ndarray,
    masks: np.ndarray,
    n: int,
    seed: int,
    b: int,
    xgb_params: dict,
    n_trees: int,
    *,
    serial: bool,
) -> np.ndarray:
    """Contribution values (N,) of ensemble member ``b``: its resample, training and SHAP
    depend only on ``seed`` and ``b``. ``serial``: SHAP on the calling thread only (members
    run side by side on pool threads; see :func:`leafshap.add_shap_t`)."""
    member_seed = (seed + _SEED_OFFSET + b) % 2**32
    idx = np.random.default_rng(member_seed).integers(0, len(y), n)
    params = {**xgb_params, "seed": member_seed}
    sample = np.asarray(masks[idx], dtype=bool)
    X = features(sample)
    dtrain = xgb.DMatrix(X, label=y[idx], nthread=int(params.get("nthread", 2)))
    booster = xgb.train(params, dtrain, num_boost_round=max(1, int(n_trees)))
    return atom_contributions(leafshap.tree_shap(booster, X, serial=serial)[0], sample).value


def contribution_intervals(
    contributions: AtomContributions,
    y: np.ndarray,
    masks: np.ndarray,
    members: list[tuple[dict, int]],
    *,
    level: float,
    seed: int,
    rows: int | None = None,
) -> ContributionIntervals:
    """Intervals around ``contributions.value`` (see the module doc); fewer than two
    ``members`` use the sampling error alone, with the normal quantile."""
    se = sampling_error(contributions)
    n_models = len(members)
    if n_models < 2:
        low, high, lab = interval(contributions.value, se, level)
        return ContributionIntervals(low, high, lab, level, n_models, np.zeros_like(se), se)
    ens = ensemble_contributions(y, masks, members, seed, rows)
    ens_sd = np.std(ens, axis=0, ddof=1)
    sd, df = combined_sd(ens_sd, n_models, se)
    low, high, lab = interval(contributions.value, sd, level, df)
    return ContributionIntervals(low, high, lab, level, n_models, ens_sd, se, df)


def combined_sd(
    ensemble_sd: np.ndarray, n_members: int, sampling_se: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The SD of each contribution value and the degrees of freedom of its t quantile: the
    members' spread (``n_members`` of them) plus the sampling error of the SHAP means, with
    the Welch–Satterthwaite degrees of freedom (:func:`welch_df`). The one place the two are
    combined, for the offline intervals (:func:`contribution_intervals`) and the live ones.

    The members' spread is used as it is, not scaled from the m-out-of-n resample to the
    catalogue: measured on 109725 over 10 seeds (``benchmarks/bench_known_truth_coverage.py``)
    these intervals cover the seed mean 89 % of the time at 90 %; divided by
    ``sqrt(f + (1 − f)·n/m)`` with f = 1/3 (the fit that gave 90 % on seeds 0–4) they cover
    78 % (58 % on seeds 5–9)."""
    ens_var = np.asarray(ensemble_sd, dtype=float) ** 2
    se_var = np.asarray(sampling_se, dtype=float) ** 2
    return np.sqrt(ens_var + se_var), welch_df(ens_var, int(n_members) - 1, se_var)


def welch_df(ens_var: np.ndarray, ens_df: int, se_var: np.ndarray) -> np.ndarray:
    """Welch–Satterthwaite degrees of freedom of ``ens_var + se_var``.

    The ensemble variance comes from ``ens_df + 1`` members, so it has ``ens_df`` degrees of
    freedom; the sampling variance comes from thousands of motifs and counts as exact. With
    the ensemble dominating (on 109725 the sampling variance is ~0.1 % of it) this is close
    to ``ens_df`` and the t quantile widens a 4-member interval by 2.35 / 1.64 ≈ 1.43 at
    90 %: the price of estimating a spread from four draws. Where the sampling variance
    dominates it goes to infinity (the normal quantile).
    """
    ev = np.asarray(ens_var, dtype=float)
    total = ev + np.asarray(se_var, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        df = np.where(ev > 0, total**2 / (ev**2 / max(int(ens_df), 1)), np.inf)
    return np.where(np.isfinite(total), df, np.inf)


def adaptive_catalogue(label: list[str], size: int, seed: int) -> np.ndarray:
    """The second pass's motifs: each atom kept with :data:`ADAPTIVE_KEEP_PROBABILITY` of its
    first-pass label, independently, seeded; empty and repeated masks are dropped (a refit of
    the same motif only weights the surrogate towards it)."""
    p = np.array([ADAPTIVE_KEEP_PROBABILITY[lab] for lab in label], dtype=float)
    draw = np.random.default_rng(seed).random((int(size), len(p))) < p
    draw = draw[draw.any(axis=1)]
    return draw[unique_row_indices(draw)]


def merge_second_pass(
    first: ContributionIntervals,
    second: ContributionIntervals,
    second_value: np.ndarray,
    n_motifs: int,
) -> ContributionIntervals:
    """First-pass intervals with the atoms that were ``uncertain`` there replaced by their
    second-pass interval and label. Confident first-pass labels are kept as they are: the
    second pass is designed to look at the uncertain atoms (the others hardly vary in its
    motifs), so it has no standing to overrule them."""
    refined = np.array([lab == UNCERTAIN for lab in first.label])
    low = np.where(refined, second.low, first.low)
    high = np.where(refined, second.high, first.high)
    lab = [s if r else f for f, s, r in zip(first.label, second.label, refined, strict=True)]
    df = None
    if first.df is not None and second.df is not None:
        df = np.where(refined, second.df, first.df)
    return ContributionIntervals(
        low=low,
        high=high,
        label=lab,
        level=first.level,
        n_models=first.n_models,
        ensemble_sd=np.where(refined, second.ensemble_sd, first.ensemble_sd),
        sampling_se=np.where(refined, second.sampling_se, first.sampling_se),
        df=df,
        refined=refined,
        refined_value=np.where(refined, np.asarray(second_value, float), np.nan),
        first_pass=first,
        adaptive_motifs=int(n_motifs),
    )
