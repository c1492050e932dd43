"""The offline ML-MotEx analysis: catalogue → batched fits → GBDT → SHAP → contributions.

One function, :func:`run_analysis`, so the CLI, the benchmarks and the streaming service's
model preparation all run the very same steps with the same settings object.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
from tqdm import tqdm

from motex_stream.analysis.result import AnalysisResult
from motex_stream.catalogue import cookie_cutter_catalogue, random_catalogue
from motex_stream.explain.contributions import atom_contributions, shap_values
from motex_stream.fitting.anisotropic import fit_anisotropic, prep_tables
from motex_stream.fitting.grfile import PDFData, read_gr
from motex_stream.fitting.isotropic import fit_isotropic
from motex_stream.fitting.reference_fit import motif_pdf
from motex_stream.fitting.results import FitResults
from motex_stream.model.gbdt import features, train
from motex_stream.pdf.batched import PreparedModel, prepare_model
from motex_stream.pdf.settings import PDFSettings
from motex_stream.structure.starting_model import StartingModel, load_starting_model

log = logging.getLogger(__name__)

FIT_CHUNK = 2048
ZOOM_MODES = ("isotropic", "anisotropic")


@dataclass(frozen=True)
class AnalysisSettings:
    """Every knob of one analysis, with the paper's defaults (DanMAX α-Keggin example)."""

    permute: tuple[str, ...] = ("W",)
    threshold: float = 2.5
    rmin: float = 1.6
    rmax: float = 10.0
    qmin: float | None = None  # None: from the data header, else 0.7
    qmax: float | None = None  # None: from the data header, else 20
    qdamp: float = 0.05
    qbroad: float = 0.01
    biso: float = 0.4
    delta2: float = 0.0
    catalogue: int = 10_000
    generator: str = "random"  # random | cookie
    lower: int = 1
    upper: int | None = None
    seed: int = 0
    zoom: str = "isotropic"
    search_calls: int = 12
    cv_folds: int = 5
    # wall-clock cap on the search (it stops asking for points); None = always all
    # search_calls points, which makes results independent of machine load
    search_time_s: float | None = 4.0

    def __post_init__(self) -> None:
        if self.zoom not in ZOOM_MODES:
            raise ValueError(f"zoom must be one of {ZOOM_MODES}, got {self.zoom!r}")
        if self.generator not in ("random", "cookie"):
            raise ValueError(f"generator must be 'random' or 'cookie', got {self.generator!r}")
        if self.catalogue < 1:
            raise ValueError("catalogue size must be >= 1")
        if not self.rmin < self.rmax:
            raise ValueError(f"need rmin < rmax, got {self.rmin}, {self.rmax}")


def load_fit_data(path: str | Path, settings: AnalysisSettings) -> tuple[PDFData, PDFSettings]:
    """Read and crop the data; Qmin/Qmax from the flags, else the header, else 0.7/20."""
    data = read_gr(path).crop(settings.rmin, settings.rmax)
    if len(data.r) < 10:
        raise ValueError(f"{path}: only {len(data.r)} points in {settings.rmin}..{settings.rmax} Å")
    qmin = settings.qmin if settings.qmin is not None else (data.qmin or 0.7)
    qmax = settings.qmax if settings.qmax is not None else (data.qmax or 20.0)
    pdf = PDFSettings.for_data_grid(
        data.r,
        qmin=qmin,
        qmax=qmax,
        qdamp=settings.qdamp,
        qbroad=settings.qbroad,
        biso=settings.biso,
        delta2=settings.delta2,
    )
    return data, pdf


def make_catalogue(model: StartingModel, settings: AnalysisSettings) -> np.ndarray:
    if settings.generator == "cookie":
        return cookie_cutter_catalogue(
            model.positions[model.permutable], settings.catalogue, settings.seed
        )
    return random_catalogue(
        model.n_permutable, settings.catalogue, settings.seed, settings.lower, settings.upper
    )


def fit_masks(
    prep: PreparedModel, masks: np.ndarray, g: np.ndarray, zoom: str, progress: bool = False
) -> FitResults:
    """Fit masks in chunks (flat memory) with an optional progress bar."""
    if zoom == "anisotropic":
        prep_tables(prep)
    fit = fit_anisotropic if zoom == "anisotropic" else fit_isotropic
    parts = []
    with tqdm(total=len(masks), desc=f"fitting ({zoom})", unit="fit", disable=not progress) as bar:
        for start in range(0, len(masks), FIT_CHUNK):
            parts.append(fit(prep, masks[start : start + FIT_CHUNK], g))
            bar.update(len(parts[-1]))
    return FitResults(
        rwp=np.concatenate([p.rwp for p in parts]),
        scale=np.concatenate([p.scale for p in parts]),
        zoom=np.concatenate([p.zoom for p in parts]),
        mode=zoom,
    )


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
    model_path: str | Path,
    settings: AnalysisSettings | None = None,
    progress: bool = False,
    model: StartingModel | None = None,
) -> AnalysisResult:
    """The whole ML-MotEx pipeline on one data set and one starting model."""
    settings = settings or AnalysisSettings()
    timings: dict[str, float] = {}
    t0 = t = time.perf_counter()
    data, pdf_settings = load_fit_data(data_path, settings)
    model = model or load_starting_model(model_path, settings.permute, settings.threshold)
    timings["load"] = time.perf_counter() - t

    t = time.perf_counter()
    masks = make_catalogue(model, settings)
    timings["catalogue"] = time.perf_counter() - t

    t = time.perf_counter()
    prep = prepare_model(model, pdf_settings, data.r)
    timings["prepare_engine"] = time.perf_counter() - t

    t = time.perf_counter()
    fits = fit_masks(prep, masks, data.g, settings.zoom, progress)
    timings["fit"] = time.perf_counter() - t
    log.info(
        "fitted %d motifs in %.2f s (%.0f fits/s)",
        len(masks),
        timings["fit"],
        len(masks) / max(timings["fit"], 1e-9),
    )

    t = time.perf_counter()
    X = features(masks)
    trained = train(
        X,
        fits.rwp,
        seed=settings.seed,
        n_calls=settings.search_calls,
        cv_folds=settings.cv_folds,
        time_budget_s=settings.search_time_s,
    )
    timings["train"] = time.perf_counter() - t
    timings.update({f"train_{k}": v for k, v in trained.timings.items() if k != "total"})

    t = time.perf_counter()
    shap = shap_values(trained.booster, X)
    contributions = atom_contributions(shap, masks)
    timings["explain"] = time.perf_counter() - t

    best = fits.best()
    g_best = fits.scale[best] * motif_pdf(model, masks[best], pdf_settings, data.r, fits.zoom[best])
    timings["total"] = time.perf_counter() - t0
    return AnalysisResult(
        model=model,
        masks=masks,
        fits=fits,
        features=X,
        shap=shap,
        contributions=contributions,
        test_mae=trained.test_mae,
        test_mse=trained.test_mse,
        r=data.r,
        g_obs=data.g,
        g_best=g_best,
        settings={
            **asdict(settings),
            "data": str(data_path),
            "starting_model": str(model_path),
            "qmin_used": pdf_settings.qmin,
            "qmax_used": pdf_settings.qmax,
            "n_points": len(data.r),
            "hyperparameters": trained.params.to_dict(),
            "n_trees": trained.booster.num_boosted_rounds(),
        },
        timings=timings,
        versions=library_versions(),
        extra={
            "engine": {
                "rank": prep.basis.rank,
                "pair_classes": prep.n_classes,
                "pairs": len(prep.pairs.d0),
            }
        },
    )
