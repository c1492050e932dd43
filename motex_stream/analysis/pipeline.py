"""The offline ML-MotEx analysis: catalogue → batched fits → GBDT → SHAP → contributions.

One function, :func:`run_analysis`, strings together the science steps of
:mod:`motex_stream.analysis.steps`, which the live service's preparation and per-frame work
call too; :class:`~motex_stream.analysis.settings.ModelSettings` is the one settings object.
"""

from __future__ import annotations

import logging
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from motex_stream.analysis import steps
from motex_stream.analysis.result import AnalysisResult
from motex_stream.analysis.settings import ModelSettings
from motex_stream.fitting.reference_fit import motif_pdf
from motex_stream.model.features import features
from motex_stream.model.search import search_trace
from motex_stream.structure.starting_model import StartingModel
from motex_stream.structure.symmetry import Sites

log = logging.getLogger(__name__)


def library_versions() -> dict[str, str]:
    out = {}
    for name in ("motex-stream", "numpy", "scipy", "numba", "xgboost", "shap", "scikit-optimize"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def run_analysis(
    data_path: str | Path,
    settings: ModelSettings,
    progress: bool = False,
    model: StartingModel | None = None,
    dask: object | None = None,
    search: list[dict] | None = None,
) -> AnalysisResult:
    """The whole ML-MotEx pipeline on one data set and one starting model.

    ``dask``: a Dask scheduler address (or Client) to fit the catalogue on; same result.
    ``search``: hyperparameters already searched (a ``search_trace``, e.g. a live model's):
    no new search, its best point trained (:func:`steps.train_surrogate`), so the answer
    differs from a live frame's only where their data do, not by the search's noise.
    A catalogue larger than ``settings.explain_rows`` is explained on a seeded subsample of
    that many motifs (:func:`steps.explain`): the result's SHAP values and features are
    those rows', and the intervals carry the subsample's standard error.
    """
    timings: dict[str, float] = {}
    t0 = t = time.perf_counter()
    data = steps.load_fit_data(data_path, settings)
    resolved = data.settings
    model = model or steps.load_model(resolved)
    timings["load"] = time.perf_counter() - t

    t = time.perf_counter()
    masks = steps.make_catalogue(model, resolved)
    timings["catalogue"] = time.perf_counter() - t

    t = time.perf_counter()
    prepared = steps.prepare_engine(model, data.settings, data.r)
    timings["prepare_engine"] = time.perf_counter() - t

    t = time.perf_counter()
    fits = steps.fit_masks(prepared, masks, data.g, resolved.zoom, progress, dask=dask)
    timings["fit"] = time.perf_counter() - t
    log.info(
        "fitted %d motifs in %.2f s (%.0f fits/s)",
        len(masks),
        timings["fit"],
        len(masks) / max(timings["fit"], 1e-9),
    )

    t = time.perf_counter()
    trained = steps.train_surrogate(masks, fits.rwp, resolved, search=search)
    timings["train"] = time.perf_counter() - t
    timings.update({f"train_{k}": v for k, v in trained.timings.items() if k != "total"})

    t = time.perf_counter()
    shap, contributions = steps.explain(
        trained, masks, rows=resolved.explain_rows, seed=resolved.seed
    )
    explained = masks if contributions.explained is None else masks[contributions.explained]
    timings["explain"] = time.perf_counter() - t

    t = time.perf_counter()
    intervals = steps.intervals(trained, masks, fits.rwp, contributions, resolved)
    timings["intervals"] = time.perf_counter() - t

    t = time.perf_counter()
    intervals = steps.refine_intervals(trained, prepared, data.g, intervals, resolved)
    timings["adaptive"] = time.perf_counter() - t

    t = time.perf_counter()
    intervals = steps.confirm_keep(prepared, data.g, intervals, resolved)
    timings["confirm"] = time.perf_counter() - t

    t = time.perf_counter()
    refinement = steps.refine_motif(
        prepared,
        data.g,
        masks,
        fits.rwp,
        contributions,
        intervals.label,
        resolved,
        positions=model.positions[model.permutable],
    )
    intervals = steps.label_with_refinement(intervals, refinement)
    timings["refine"] = time.perf_counter() - t

    best = fits.best()
    g_best = fits.scale[best] * motif_pdf(model, masks[best], data.pdf, data.r, fits.zoom[best])
    timings["total"] = time.perf_counter() - t0
    search_capped = resolved.search_time_s is not None
    return AnalysisResult(
        model=model,
        masks=masks,
        fits=fits,
        features=features(explained),
        shap=shap,
        contributions=contributions,
        intervals=intervals,
        refinement=refinement,
        # the sites the live analyzer reports for this model: pairs within the calculator's
        # range (a fit never sees farther ones)
        sites=Sites.of(model, cutoff=prepared.grid.pair_dmax),
        test_mae=trained.test_mae,
        test_mse=trained.test_mse,
        r=data.r,
        g_obs=data.g,
        g_best=g_best,
        settings={
            **resolved.model_dump(mode="json"),
            "data": str(data_path),
            "n_points": len(data.r),
            "deterministic": not search_capped,
            "search_given": search is not None,
            "hyperparameters": trained.params.to_dict(),
            "n_trees": trained.booster.num_boosted_rounds(),
            "search_trace": search_trace(trained.search_history),
        },
        timings=timings,
        versions=library_versions(),
        extra={
            "engine": {
                "rank": prepared.basis.rank,
                "pair_classes": prepared.n_classes,
                "pairs": len(prepared.pairs.d0),
            },
            # motifs the surrogate learnt from (all, or a seeded subsample of train_rows):
            # its search and fit on ``train``, its test_mae on ``test``
            "surrogate": {
                "train": trained.n_train,
                "test": trained.n_test,
                "subsampled": trained.n_train + trained.n_test < len(masks),
            },
        },
    )
