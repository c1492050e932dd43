"""The science steps of ML-MotEx, each defined once and called by every path.

``analyze`` (:func:`motex_stream.analysis.pipeline.run_analysis`), ``fit``, and the live
service's preparation and per-frame work (:mod:`motex_stream.stream.live.analyzer`) all go through
these functions, so the offline and the live answer to the same question cannot drift apart:

1. :func:`fit_data` / :func:`load_fit_data`: the G(r) on the fit grid, checked, with the Q
   range resolved from the settings, else the data header, else the fallback;
2. :func:`load_model` and :func:`make_catalogue`: the starting model and its motifs;
3. :func:`prepare_engine`: the prepared model (batched PDF tables) on the fit grid;
4. :func:`fit_masks`: Rwp (and scale, zoom) of every motif;
5. :func:`train_surrogate`: the XGBoost model of Rwp, hyperparameters searched by count;
6. :func:`explain`: SHAP values and atom contribution values (on a seeded subsample of a
   catalogue larger than ``explain_rows``, whose standard error the intervals carry);
7. :func:`intervals`: a confidence interval and a keep/remove/uncertain label per atom;
8. :func:`refine_intervals`: a second pass of extra motifs for the atoms left uncertain;
9. :func:`confirm_keep`: fits that check every ``keep`` next to the motif the keep set forms;
10. :func:`refine_motif` / :func:`label_with_refinement`: a steepest descent over motifs by
    direct fits from the surrogate's and the catalogue's best guesses, and, in the same call,
    the labels the surrogate's intervals and the refined motif's per-atom toggles agree on.

Steps 5-10 import the surrogate and explanation modules (xgboost, scikit-optimize, SHAP)
inside their functions. Why: ``fit`` runs steps 1-4 only, and those imports were most of its
start-up (issue 23); every other path pays for them once, at its first surrogate step.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from motex_stream.analysis.settings import FALLBACK_QMAX, FALLBACK_QMIN, ModelSettings
from motex_stream.catalogue import PackedMasks, cookie_cutter_catalogue, random_catalogue
from motex_stream.fitting import dispatch
from motex_stream.fitting.grfile import read_gr
from motex_stream.fitting.results import FitResults
from motex_stream.model.features import features, training_features
from motex_stream.model.hyperparameters import Hyperparameters
from motex_stream.pdf.batched import Backend, PreparedModel, prepare_model
from motex_stream.pdf.settings import PDFSettings
from motex_stream.structure.starting_model import StartingModel, load_starting_model

if TYPE_CHECKING:
    from motex_stream.explain.confidence import ContributionIntervals, KeepConfirmation
    from motex_stream.explain.contributions import AtomContributions
    from motex_stream.explain.refine import RefinedMotif
    from motex_stream.model.training import TrainedModel

log = logging.getLogger(__name__)

#: Motifs fitted per batch: bounds the engine's working memory whatever the catalogue size.
FIT_CHUNK = 2048
#: Fit-grid step (Å) used when the data grid is not uniform (the engine needs a uniform one).
UNIFORM_STEP = 0.01
#: Fewest data points in the fit range that make a fit meaningful.
MIN_POINTS = 10
#: Most points on the fit grid: the engine's basis is points × Q-points; beyond this the grid
#: is far finer than any PDF's resolution and only costs memory.
MAX_POINTS = 20_000


@dataclass(frozen=True)
class FitData:
    """Observed G on the fit grid and the settings it is fitted with (Q range resolved)."""

    r: np.ndarray
    g: np.ndarray
    settings: ModelSettings
    pdf: PDFSettings
    origin: str  # file path or frame description, for messages and reports


def pdf_settings(settings: ModelSettings, r: np.ndarray) -> PDFSettings:
    """Engine settings on fit grid ``r`` (srfit's calculator-grid rule); Q range resolved."""
    if settings.qmin is None or settings.qmax is None:
        raise ValueError("resolve the Q range first (ModelSettings.with_q_range)")
    return PDFSettings.for_data_grid(
        r,
        qmin=settings.qmin,
        qmax=settings.qmax,
        qdamp=settings.qdamp,
        qbroad=settings.qbroad,
        biso=settings.biso,
        delta2=settings.delta2,
    )


def default_pdf_settings(r: np.ndarray, **changes: object) -> PDFSettings:
    """Engine settings from the settings model's own defaults, for uses without a starting
    model file (simulated series, the reference-script checks); the Q range is the fallback."""
    fields = ModelSettings.model_fields
    values: dict[str, object] = {
        k: fields[k].default for k in ("qdamp", "qbroad", "biso", "delta2")
    }
    values.update(qmin=FALLBACK_QMIN, qmax=FALLBACK_QMAX)
    values.update(changes)
    return PDFSettings.for_data_grid(r, **values)


def fit_data(
    r: np.ndarray,
    g: np.ndarray,
    settings: ModelSettings,
    *,
    header_q: tuple[float | None, float | None] = (None, None),
    origin: str = "data",
) -> FitData:
    """Check the data, cut them to the fit range and resolve the Q range.

    Refused with a one-line reason, before any work: non-finite values, a grid that is not
    increasing, data that do not cover the fit range (within half a grid step), too few or
    absurdly many points, and a G that is zero everywhere (nothing to fit: every motif would
    get the same Rwp and the surrogate would have nothing to learn).
    """
    r_all = np.asarray(r, dtype=float)
    g_all = np.asarray(g, dtype=float)
    if r_all.ndim != 1 or r_all.shape != g_all.shape or r_all.size < 2:
        raise ValueError(f"{origin}: r and G must be 1-D arrays of the same length (≥ 2)")
    if not (np.isfinite(r_all).all() and np.isfinite(g_all).all()):
        raise ValueError(f"{origin}: r or G holds NaN or infinite values")
    if np.any(np.diff(r_all) <= 0):
        raise ValueError(f"{origin}: the r grid is not strictly increasing")
    half_step = 0.5 * float(np.median(np.diff(r_all)))
    if r_all[0] > settings.rmin + half_step or r_all[-1] < settings.rmax - half_step:
        raise ValueError(
            f"{origin}: the data cover r = {r_all[0]:.3f}..{r_all[-1]:.3f} Å, not the fit range "
            f"{settings.rmin:g}..{settings.rmax:g} Å (set rmin/rmax inside the data)"
        )
    keep = (r_all >= settings.rmin - 1e-8) & (r_all <= settings.rmax + 1e-8)
    if keep.sum() < MIN_POINTS:
        raise ValueError(
            f"{origin}: only {int(keep.sum())} points in {settings.rmin:g}..{settings.rmax:g} Å "
            f"(need {MIN_POINTS})"
        )
    r_fit, g_fit = r_all[keep], g_all[keep]
    steps = np.diff(r_fit)
    if np.ptp(steps) > 1e-6 * steps.mean():  # non-uniform data: the engine needs a uniform grid
        r_uniform = np.round(
            np.arange(settings.rmin, settings.rmax + UNIFORM_STEP / 2, UNIFORM_STEP), 10
        )
        r_fit, g_fit = r_uniform, np.interp(r_uniform, r_all, g_all)
    if len(r_fit) > MAX_POINTS:
        raise ValueError(
            f"{origin}: {len(r_fit)} points in the fit range; at most {MAX_POINTS} are supported "
            "(resample the data to a coarser grid)"
        )
    if not np.any(g_fit):
        raise ValueError(f"{origin}: G is zero everywhere in the fit range: nothing to fit")
    resolved = settings.with_q_range(*header_q)
    return FitData(r_fit, g_fit, resolved, pdf_settings(resolved, r_fit), origin)


def load_fit_data(path: str | Path, settings: ModelSettings) -> FitData:
    """:func:`fit_data` of a ``.gr`` file, with the Q range of its header."""
    data = read_gr(path)
    return fit_data(data.r, data.g, settings, header_q=(data.qmin, data.qmax), origin=str(path))


def load_model(settings: ModelSettings) -> StartingModel:
    """The starting model, split into permutable and dependent atoms.

    A model with fewer than two atoms, or fewer than two permutable atoms, has no motifs worth
    comparing, so it is refused here rather than failing deep inside the engine.
    """
    model = load_starting_model(settings.starting_model, settings.permute, settings.threshold)
    if isinstance(settings.biso, dict):
        missing = sorted(set(model.symbols) - set(settings.biso))
        if missing:
            raise ValueError(f"biso: no value for element(s) {', '.join(missing)} of the model")
    if model.n_atoms < 2:
        raise ValueError(
            f"{settings.starting_model}: {model.n_atoms} atom(s); a PDF needs at least two"
        )
    if model.n_permutable < 2:
        raise ValueError(
            f"{settings.starting_model}: only {model.n_permutable} atom(s) of "
            f"{', '.join(settings.permute)}; ML-MotEx needs at least two permutable atoms"
        )
    return model


def make_catalogue(model: StartingModel, settings: ModelSettings) -> PackedMasks:
    """The candidate motifs (masks over the permutable atoms), seeded, bit-packed.

    Why packed: the catalogue lives for the whole run, and as bools it costs a byte per atom
    per motif (10^7 motifs over 80 atoms: 800 MB; packed: 100 MB). Every step reads rows of
    it as bools (:class:`~motex_stream.catalogue.PackedMasks`), a chunk or a subsample at a
    time; the random generator never holds more than one round unpacked.
    """
    if settings.generator == "cookie":
        return PackedMasks.from_bool(
            cookie_cutter_catalogue(
                model.positions[model.permutable], settings.catalogue_size, settings.seed
            )
        )
    packed = random_catalogue(
        model.n_permutable,
        settings.catalogue_size,
        settings.seed,
        settings.lower,
        settings.upper,
        packed=True,
    )
    return PackedMasks(packed, model.n_permutable)


def prepare_engine(
    model: StartingModel,
    settings: ModelSettings,
    r: np.ndarray,
    class_kernels: np.ndarray | None = None,
) -> PreparedModel:
    """The prepared model of ``model`` on fit grid ``r`` (Q range resolved): the batched
    pair-class tables every fit reads (``class_kernels``: the tables saved from an earlier
    preparation of the same, see :func:`motex_stream.pdf.batched.prepare_model`).

    Its ``backend`` is the numeric backend of the settings (``settings.engine``,
    ``settings.device``), so every later :func:`fit_masks` of it, here or on a Dask worker,
    honours the setting.
    """
    prepared = prepare_model(model, pdf_settings(settings, r), r, class_kernels=class_kernels)
    prepared.backend = Backend(settings.engine, settings.device)
    return prepared


def fit_masks(
    prepared: PreparedModel,
    masks: np.ndarray | PackedMasks,
    g: np.ndarray,
    zoom: str,
    progress: bool = False,
    dask: object | None = None,
) -> FitResults:
    """Fit every mask to ``g`` in chunks of :data:`FIT_CHUNK` (flat memory) on the prepared
    model's backend (torch: chunks of its ``CALL_CHUNK``), through the one dispatch
    :func:`motex_stream.fitting.dispatch.fit` that the Dask tasks use too.

    ``dask``: a Dask scheduler address or ``distributed.Client`` to run the chunks on (None:
    fit here; ``analyze --dask`` and ``[service] dask`` pass theirs for the catalogue fits, see
    :mod:`motex_stream.analysis.scale_out`). Same results either way.
    """
    from motex_stream.analysis import scale_out

    # an unknown zoom is refused by both fitters before any work (dispatch.fit on the first
    # chunk, fit_masks_dask before any task), so it is not checked a third time here
    if dask is not None:
        with tqdm(
            total=len(masks), desc=f"fitting ({zoom}, dask)", unit="fit", disable=not progress
        ) as bar:
            return scale_out.fit_masks_dask(
                dask, prepared, masks, g, zoom, FIT_CHUNK, on_chunk=bar.update
            )
    chunk = dispatch.call_chunk(prepared.backend, FIT_CHUNK)
    n = len(masks)
    if n <= chunk:
        return dispatch.fit(prepared, masks[:], g, zoom)
    # results written into arrays of the final size: joining per-chunk parts would hold the
    # parts and the joined arrays at once (40 bytes a motif twice; 400 MB extra at 10^7)
    out = FitResults(np.empty(n), np.empty(n), np.empty((n, 3)), mode=zoom)
    with tqdm(total=n, desc=f"fitting ({zoom})", unit="fit", disable=not progress) as bar:
        for start in range(0, n, chunk):
            part = dispatch.fit(prepared, masks[start : start + chunk], g, zoom)
            stop = start + len(part)
            out.rwp[start:stop], out.scale[start:stop], out.zoom[start:stop] = (
                part.rwp,
                part.scale,
                part.zoom,
            )
            bar.update(len(part))
    return out


def train_surrogate(
    masks: np.ndarray,
    rwp: np.ndarray,
    settings: ModelSettings,
    search: Sequence[dict[str, Any]] | None = None,
) -> TrainedModel:
    """The GBDT of Rwp on the mask features, hyperparameters searched by count (seeded).

    A catalogue larger than ``settings.train_rows`` trains it on a seeded subsample of that
    many motifs (:func:`train_sample`): only those rows' features are ever built, so the
    memory of training does not grow with the catalogue. ``trained.n_train + n_test`` says
    how many motifs it saw.

    ``search``: a search already made (its points with ``cv_mae``, as
    :func:`~motex_stream.model.search.search_trace` records them). Its ``ci_models`` best
    points (the model's and its interval members') are scored again by CV on these rows
    (:func:`~motex_stream.model.search.rescore`: the round count sets the values' scale, the
    ranking the members) with no new search; the best of them is trained by the same split,
    early stopping and seed, and they are the model's search history, from which
    :func:`intervals` takes its members. Why:
    a live surrogate rebuilt on a frame trains with its serving search (a new search costs
    ~50× the training), and ``analyze`` given that search is then the same model, so a
    comparison of the two answers isolates the search's own noise (issue 20).
    """
    from motex_stream.model.training import train

    rwp = np.asarray(rwp, dtype=float)
    if not np.isfinite(rwp).all():
        raise ValueError(f"{int((~np.isfinite(rwp)).sum())} fits gave a non-finite Rwp")
    if np.ptp(rwp) == 0:
        raise ValueError("every motif fits equally well (constant Rwp): nothing to explain")
    picked = train_sample(len(rwp), settings.train_rows, settings.seed)
    if picked is not None:
        log.info(
            "training the surrogate on %d of %d motifs (seeded subsample)", len(picked), len(rwp)
        )
        masks, rwp = masks[picked], rwp[picked]
    if search:
        # the points the model and its interval members use (steps.intervals), scored again
        used = sorted(search, key=lambda h: h.get("cv_mae", np.inf))[: max(1, settings.ci_models)]
        return train(
            training_features(masks),
            rwp,
            search=False,
            given=used,
            given_folds=settings.cv_folds,
            seed=settings.seed,
        )
    return train(
        training_features(masks),
        rwp,
        seed=settings.seed,
        n_calls=settings.search_calls,
        cv_folds=settings.cv_folds,
        time_budget_s=settings.search_time_s,
    )


#: Seed offsets of the trained and the explained subsamples (never the catalogue's or the
#: search's stream, nor each other's).
_TRAIN_SEED_OFFSET = 7_919
_EXPLAIN_SEED_OFFSET = 104_729


def _row_sample(n_motifs: int, rows: int | None, seed: int) -> np.ndarray | None:
    """Sorted seeded uniform subsample of ``rows`` of ``n_motifs`` rows without replacement;
    None (every row) when ``rows`` is unset or covers them all."""
    if rows is None or rows >= n_motifs:
        return None
    rng = np.random.default_rng(seed % 2**32)
    return np.sort(rng.choice(n_motifs, size=int(rows), replace=False))


def train_sample(n_motifs: int, rows: int | None, seed: int) -> np.ndarray | None:
    """Sorted catalogue rows the surrogate is trained on (:func:`_row_sample`).

    Why a subsample is enough: the surrogate maps tens to hundreds of 0/1 features to Rwp, and
    its held-out error stops improving long before 10^6 motifs, while the search's time and
    memory grow with every row.
    """
    return _row_sample(n_motifs, rows, seed + _TRAIN_SEED_OFFSET)


def explain_sample(n_motifs: int, rows: int | None, seed: int) -> np.ndarray | None:
    """Sorted catalogue rows SHAP explains (:func:`_row_sample`).

    Why a subsample is enough: a contribution value is a difference of two SHAP means, and a
    uniform subsample estimates each mean with a standard error that the intervals carry
    (:func:`motex_stream.explain.confidence.sampling_error` of the rows explained), while
    SHAP's time and memory grow with the rows explained, not with the catalogue.
    """
    return _row_sample(n_motifs, rows, seed + _EXPLAIN_SEED_OFFSET)


def explain(
    trained: TrainedModel, masks: np.ndarray, *, rows: int | None = None, seed: int = 0
) -> tuple[np.ndarray, AtomContributions]:
    """SHAP values of the surrogate and the atom contribution values, over every row of
    ``masks`` or, when there are more than ``rows``, over a seeded subsample of ``rows``
    (:func:`explain_sample`; ``contributions.explained`` names the rows, and the SHAP
    matrix holds those rows only)."""
    from motex_stream.explain.contributions import shap_values

    picked = explain_sample(len(masks), rows, seed)
    sub = masks if picked is None else masks[picked]  # only the picked rows are unpacked
    shap = shap_values(trained.booster, features(sub))
    if picked is not None:
        log.info("explained %d of %d motifs (seeded subsample)", len(picked), len(masks))
    return shap, explained_contributions(shap, sub, picked, len(masks))


def explained_contributions(
    shap: np.ndarray, explained_masks: np.ndarray, picked: np.ndarray | None, n_catalogue: int
) -> AtomContributions:
    """Contribution values from the SHAP of the rows explained (``explained_masks``: the
    catalogue's rows ``picked``, or all of them when ``picked`` is None), marked with which
    rows they are, so reports and intervals know a subsample from the whole. ``analyze``
    (:func:`explain`) and the live analyzer (SHAP cached across frames) both end here."""
    from motex_stream.explain.contributions import atom_contributions

    contributions = atom_contributions(shap, explained_masks)
    if picked is not None:
        contributions.explained = picked
        contributions.n_catalogue = n_catalogue
    return contributions


def intervals(
    trained: TrainedModel,
    masks: np.ndarray,
    rwp: np.ndarray,
    contributions: AtomContributions,
    settings: ModelSettings,
) -> ContributionIntervals:
    """Confidence interval and label per atom: ``settings.ci_models`` surrogates on bootstrap
    resamples of the fits, with the best hyperparameter points the search already evaluated
    (no new search), plus the sampling error of the SHAP means
    (:mod:`motex_stream.explain.confidence`); seeded by ``settings.seed``."""
    from motex_stream.explain.confidence import contribution_intervals

    points = sorted(trained.search_history, key=lambda h: h.get("cv_mae", np.inf))
    params = [Hyperparameters.from_dict(h) for h in points] or [trained.params]
    members = [
        (p.to_xgb_params(seed=settings.seed), p.n_estimators)
        for p in (params[b % len(params)] for b in range(settings.ci_models))
    ]
    return contribution_intervals(
        contributions,
        rwp,
        masks,
        members,
        level=settings.ci_level,
        seed=settings.seed,
        rows=settings.ci_rows,
    )


#: Seed offset of the second pass's motifs and surrogate (never the first pass's streams).
_ADAPTIVE_SEED_OFFSET = 15_485_863


def refine_intervals(
    trained: TrainedModel,
    prepared: PreparedModel,
    g: np.ndarray,
    first: ContributionIntervals,
    settings: ModelSettings,
) -> ContributionIntervals:
    """Second pass for the atoms the first pass left ``uncertain`` (``settings.adaptive_motifs``
    motifs; 0 or no uncertain atom: ``first`` unchanged).

    Why: in random motifs an atom next to a half-built motif can stand in for a missing one,
    so its contribution is blurred. The second pass's motifs keep the confident ``keep``
    atoms, flip a coin for each uncertain atom and mostly leave out the confident ``remove``
    atoms (:func:`~motex_stream.explain.confidence.adaptive_catalogue`), so each uncertain
    atom is judged as an addition to the motif already found. They are fitted, a surrogate
    with the first pass's chosen hyperparameters (no new search) is trained on them alone and
    explained, and the uncertain atoms get their interval from that surrogate by the same
    :func:`intervals` machinery; confident first-pass labels are kept.
    """
    from motex_stream.explain.confidence import UNCERTAIN, adaptive_catalogue, merge_second_pass
    from motex_stream.model.training import train

    if settings.adaptive_motifs == 0 or UNCERTAIN not in first.label:
        return first
    seed = (settings.seed + _ADAPTIVE_SEED_OFFSET) % 2**32
    masks = adaptive_catalogue(first.label, settings.adaptive_motifs, seed)
    fits = fit_masks(prepared, masks, g, settings.zoom)
    second = train(
        training_features(masks), fits.rwp, params=trained.params, search=False, seed=seed
    )
    _, contributions = explain(second, masks, rows=settings.explain_rows, seed=seed)
    ci = intervals(trained, masks, fits.rwp, contributions, settings.updated(seed=seed))
    return merge_second_pass(first, ci, contributions.value, len(masks))


#: Seed offset of the confirming pass's contexts (never another step's random stream).
_CONFIRM_SEED_OFFSET = 32_452_843


def confirmation(
    prepared: PreparedModel, g: np.ndarray, labels: list[str], settings: ModelSettings
) -> KeepConfirmation | None:
    """Confirming pass over the ``keep`` atoms of ``labels`` (``settings.confirm_contexts``
    contexts; None when that is 0 or no atom is ``keep``): each keep atom is added to and
    removed from perturbations of the pruned keep set and fitted to ``g``; the ones whose
    addition does not lower Rwp by a margin its interval resolves are to be ``uncertain``.

    Why: a contribution value is an average over random, mostly half-built motifs, where a
    fragment of the motif can stand in for the real thing; the fits around the motif actually
    found do not have that bias (:mod:`motex_stream.explain.confirmation`). Offline
    (:func:`confirm_keep`) and live (per frame, :mod:`motex_stream.stream.live.analyzer`) call this
    same step.
    """
    from motex_stream.explain.confidence import KEEP
    from motex_stream.explain.confirmation import keep_confirmation

    if settings.confirm_contexts == 0 or KEEP not in labels:
        return None
    return keep_confirmation(
        labels,
        lambda masks: fit_masks(prepared, masks, g, settings.zoom).rwp,
        settings.confirm_contexts,
        settings.ci_level,
        (settings.seed + _CONFIRM_SEED_OFFSET) % 2**32,
    )


def confirmed_labels(
    prepared: PreparedModel, g: np.ndarray, labels: list[str], settings: ModelSettings
) -> list[str]:
    """``labels`` with the keep atoms the confirming pass (:func:`confirmation`) does not
    confirm made ``uncertain``: the live frame's one call (it publishes labels, not the
    pass's measurement; ``analyze`` attaches that too, :func:`confirm_keep`)."""
    from motex_stream.explain.confirmation import demote

    conf = confirmation(prepared, g, labels, settings)
    return labels if conf is None else demote(labels, conf)


def confirm_keep(
    prepared: PreparedModel,
    g: np.ndarray,
    ci: ContributionIntervals,
    settings: ModelSettings,
) -> ContributionIntervals:
    """``ci`` with the keep atoms the confirming pass (:func:`confirmation`) does not
    confirm labelled ``uncertain``, and the pass's measurement attached; unchanged when the
    pass is off or there is no keep atom."""
    from motex_stream.explain.confirmation import apply_confirmation

    conf = confirmation(prepared, g, ci.label, settings)
    return ci if conf is None else apply_confirmation(ci, conf)


#: Seed offset of the refinement's kicks (never another step's random stream).
_REFINE_SEED_OFFSET = 49_979_687


def refine_motif(
    prepared: PreparedModel,
    g: np.ndarray,
    masks: np.ndarray | PackedMasks,
    rwp: np.ndarray,
    contributions: AtomContributions,
    labels: list[str] | None,
    settings: ModelSettings,
    positions: np.ndarray | None = None,
) -> RefinedMotif | None:
    """Motif refinement by direct fits (``settings.refine_fits`` fits; 0: None) and the
    intervals' ``labels`` checked against it (``checked_label``): the one call of ``analyze``
    and of a live frame (:func:`motex_stream.explain.refine.refinement`; the starts include
    the ``settings.refine_starts`` best compact cuts of the permutable atoms at ``positions``,
    when given). The Q range must be resolved.

    The fits go through :func:`fit_masks` on the prepared model, so the refined motif obeys
    the same bonding rule as every catalogue motif (dependent atoms follow the kept
    permutable atoms). Deterministic: the kicks are seeded by ``settings.seed``, the budget
    counts fits; the labels' tests run at ``settings.ci_level`` on the fit range's
    independent points."""
    from motex_stream.explain.refine import independent_points, refinement

    if settings.refine_fits == 0:
        return None

    def fit(m: np.ndarray) -> np.ndarray:
        return fit_masks(prepared, m, g, settings.zoom).rwp

    assert settings.qmax is not None
    return refinement(
        fit,
        settings.refine_fits,
        masks,
        rwp,
        contributions,
        labels,
        positions=positions,
        n_starts=settings.refine_starts,
        n_independent=independent_points(settings.rmin, settings.rmax, settings.qmax),
        level=settings.ci_level,
        seed=(settings.seed + _REFINE_SEED_OFFSET) % 2**32,
    )


def label_with_refinement(
    ci: ContributionIntervals, refined: RefinedMotif | None
) -> ContributionIntervals:
    """``ci`` with the labels :func:`refine_motif` checked (every confident one the refined
    motif's toggle contradicts, its sign resolved one-sided, made ``uncertain``); unchanged
    without a refinement. The interval columns still bound the contribution value."""
    if refined is None or refined.checked_label is None:
        return ci
    return replace(ci, label=refined.checked_label)
