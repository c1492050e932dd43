"""The live ML-MotEx analysis of one starting model, frame after frame.

Preparation (once per model, persisted): catalogue, batched engine on the fit grid, a fit of
the whole catalogue to a reference G (or the first frame), a Bayesian hyperparameter search
and a first GBDT. Per frame: refit a subsample of the catalogue to the new G (batched engine),
continue boosting the GBDT on those fresh Rwp values (warm start, bounded by periodic
rebuilds; see :class:`~motex_stream.model.gbdt.IncrementalSurrogate`), update TreeSHAP over
the catalogue incrementally (only new trees are explained) and turn it into atom
contribution values.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from motex_stream.catalogue import Catalogue, random_catalogue
from motex_stream.explain.contributions import ShapCache, atom_contributions
from motex_stream.fitting.anisotropic import fit_anisotropic, prep_tables
from motex_stream.fitting.grfile import read_gr
from motex_stream.fitting.isotropic import fit_isotropic
from motex_stream.fitting.results import FitResults
from motex_stream.model.gbdt import (
    FRAME_SHAP_BUDGET,
    IncrementalSurrogate,
    features,
    rounds_for_budget,
    train,
)
from motex_stream.pdf.batched import PreparedModel, prepare_model
from motex_stream.pdf.settings import PDFSettings
from motex_stream.stream.analyzer_protocol import FrameResult
from motex_stream.stream.frames import Frame, FrameError, regrid, validate_frame
from motex_stream.structure.starting_model import StartingModel, load_starting_model

log = logging.getLogger(__name__)

STATE_VERSION = 1
FIT_STEP = 0.01  # Å, fit grid step when no reference grid is given
# settings that only steer the per-frame work: a saved state stays valid when they change
RUNTIME_SETTINGS = ("name", "refit", "rounds", "max_trees", "search_calls")


@dataclass(frozen=True)
class LiveModelSettings:
    """What one live model needs; mirrors a ``[[models]]`` config entry."""

    name: str
    starting_model: str
    permute: tuple[str, ...] = ("W",)
    threshold: float = 2.5
    rmin: float = 1.6
    rmax: float = 10.0
    qmin: float = 0.7
    qmax: float = 20.0
    qdamp: float = 0.05
    qbroad: float = 0.01
    biso: float = 0.4
    zoom: str = "isotropic"
    catalogue_size: int = 10_000
    refit: int = 10_000
    rounds: int = 10
    # tree cap of the live surrogate; a rebuild keeps a third of it. Small on purpose: a rebuild
    # frame pays a full TreeSHAP pass, which must fit the per-frame latency budget
    max_trees: int = 120
    seed: int = 0
    search_calls: int = 12

    @classmethod
    def from_config(cls, cfg: Any) -> LiveModelSettings:
        """From a :class:`motex_stream.stream.config.ModelConfig`."""
        biso = cfg.biso if not isinstance(cfg.biso, dict) else dict(cfg.biso)
        return cls(
            name=cfg.name,
            starting_model=str(cfg.starting_model),
            permute=tuple(cfg.permute),
            threshold=cfg.threshold,
            rmin=cfg.rmin,
            rmax=cfg.rmax,
            qmin=cfg.qmin,
            qmax=cfg.qmax,
            qdamp=cfg.qdamp,
            qbroad=cfg.qbroad,
            biso=biso,  # type: ignore[arg-type]
            zoom=cfg.zoom,
            catalogue_size=cfg.catalogue_size,
            refit=cfg.refit,
            rounds=cfg.rounds,
            seed=cfg.seed,
        )

    def pdf_settings(self, r: np.ndarray) -> PDFSettings:
        """The engine settings on fit grid ``r`` (srfit's calculator-grid rule)."""
        return PDFSettings.for_data_grid(
            r,
            qmin=self.qmin,
            qmax=self.qmax,
            qdamp=self.qdamp,
            qbroad=self.qbroad,
            biso=self.biso,
        )

    def fingerprint(self) -> str:
        """Hash of everything that shapes the prepared state, incl. the model file's bytes."""
        blob = json.dumps(
            {k: v for k, v in asdict(self).items() if k not in RUNTIME_SETTINGS},
            sort_keys=True,
            default=str,
        ).encode()
        model_bytes = Path(self.starting_model).read_bytes()
        return hashlib.sha256(blob + model_bytes).hexdigest()[:16]


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


class MotexFrameAnalyzer:
    """A prepared starting model that turns each frame into atom contribution values."""

    def __init__(
        self,
        settings: LiveModelSettings,
        model: StartingModel,
        engine: PreparedModel,
        catalogue: np.ndarray,
        surrogate: IncrementalSurrogate,
        state_dir: Path | None = None,
    ) -> None:
        self.settings = settings
        self.name = settings.name
        self.model = model
        self.engine = engine
        self.catalogue = catalogue
        self.surrogate = surrogate
        self.state_dir = state_dir
        self._features = features(catalogue)
        self._shap = ShapCache(self._features)
        if surrogate.n_trees + surrogate.rounds_per_frame <= surrogate.max_trees:
            # explain the current trees now (start-up), so frame 1 pays only for its new trees
            self._shap.update(surrogate.booster, generation=surrogate.generation)
        self._frames = 0
        self._run_overrides: dict[str, dict[str, Any]] = {}
        self._elements = [model.symbols[i] for i in model.permutable]
        self._atoms = (model.permutable + 1).tolist()

    # ----------------------------------------------------------------- preparation
    @property
    def fit_r(self) -> np.ndarray:
        return self.engine.r_data

    @classmethod
    def prepare(
        cls,
        settings: LiveModelSettings,
        reference: Frame | Path | None = None,
        state_dir: Path | None = None,
    ) -> MotexFrameAnalyzer:
        """Load persisted state if it matches the settings, else prepare from scratch."""
        model = load_starting_model(settings.starting_model, settings.permute, settings.threshold)
        directory = state_dir / settings.name if state_dir else None
        if directory is not None:
            loaded = cls._load_state(settings, model, directory)
            if loaded is not None:
                return loaded
        if reference is None:
            raise FrameError(f"model {settings.name}: no reference G and no saved state")
        r, g = cls._reference_curve(settings, reference)
        t0 = time.perf_counter()
        pdf = settings.pdf_settings(r)
        engine = prepare_model(model, pdf, r)
        masks = random_catalogue(model.n_permutable, settings.catalogue_size, settings.seed)
        fits = _fit(engine, masks, g, settings.zoom)
        trained = train(
            features(masks), fits.rwp, seed=settings.seed, n_calls=settings.search_calls
        )
        surrogate = IncrementalSurrogate(
            trained,
            rounds_per_frame=_frame_rounds(settings.rounds, trained.params.max_depth),
            max_trees=settings.max_trees,
            rebuild_trees=max(1, settings.max_trees // 3),
            seed=settings.seed,
        )
        log.info(
            "prepared model %s: %d motifs, %d trees, test MAE %.4f in %.1f s",
            settings.name,
            len(masks),
            surrogate.n_trees,
            trained.test_mae,
            time.perf_counter() - t0,
        )
        analyzer = cls(settings, model, engine, masks, surrogate, state_dir=directory)
        analyzer.save_state()
        return analyzer

    @staticmethod
    def _reference_curve(
        settings: LiveModelSettings, reference: Frame | Path
    ) -> tuple[np.ndarray, np.ndarray]:
        """Fit grid and G of the reference: the data points inside [rmin, rmax]."""
        if isinstance(reference, Frame):
            frame = validate_frame(reference)
            r_all, g_all = frame.r, frame.g
        else:
            data = read_gr(reference)
            r_all, g_all = data.r, data.g
        keep = (r_all >= settings.rmin - 1e-8) & (r_all <= settings.rmax + 1e-8)
        if keep.sum() < 10:
            raise FrameError(
                f"reference covers r = {r_all[0]:.2f}..{r_all[-1]:.2f} Å, not the fit range "
                f"{settings.rmin}..{settings.rmax} Å"
            )
        r = r_all[keep]
        steps = np.diff(r)
        if np.ptp(steps) > 1e-6 * steps.mean():  # non-uniform data: use a uniform fit grid
            r = np.round(np.arange(settings.rmin, settings.rmax + FIT_STEP / 2, FIT_STEP), 10)
            return r, np.interp(r, r_all, g_all)
        return r, g_all[keep]

    # ----------------------------------------------------------------- persistence
    def save_state(self) -> None:
        """Catalogue, booster and metadata, each written atomically (restart-safe)."""
        if self.state_dir is None:
            return
        self.state_dir.mkdir(parents=True, exist_ok=True)
        Catalogue(self.catalogue, "random", self.settings.seed).save(
            self.state_dir / "catalogue.npz.tmp"
        )
        os.replace(self.state_dir / "catalogue.npz.tmp", self.state_dir / "catalogue.npz")
        tmp_dir = self.state_dir / "surrogate.tmp"
        self.surrogate.save(tmp_dir)
        final = self.state_dir / "surrogate"
        if final.exists():
            old = self.state_dir / "surrogate.old"
            os.replace(final, old)
            os.replace(tmp_dir, final)
            for p in old.iterdir():
                p.unlink()
            old.rmdir()
        else:
            os.replace(tmp_dir, final)
        np.savez(self.state_dir / "grid.npz.tmp.npz", r=self.engine.r_data)
        os.replace(self.state_dir / "grid.npz.tmp.npz", self.state_dir / "grid.npz")
        _write_json_atomic(
            self.state_dir / "state.json",
            {
                "version": STATE_VERSION,
                "fingerprint": self.settings.fingerprint(),
                "settings": asdict(self.settings),
                "frames": self._frames,
                "saved_at": time.time(),
            },
        )

    @classmethod
    def _load_state(
        cls, settings: LiveModelSettings, model: StartingModel, directory: Path
    ) -> MotexFrameAnalyzer | None:
        meta_path = directory / "state.json"
        if not meta_path.exists():
            return None
        try:
            meta = json.loads(meta_path.read_text())
            if (
                meta.get("version") != STATE_VERSION
                or meta.get("fingerprint") != settings.fingerprint()
            ):
                log.warning(
                    "state in %s was prepared with other settings; preparing anew", directory
                )
                return None
            masks = Catalogue.load(directory / "catalogue.npz").masks
            surrogate = IncrementalSurrogate.load(directory / "surrogate")
            surrogate.rounds_per_frame = _frame_rounds(settings.rounds, surrogate.params.max_depth)
            r = np.load(directory / "grid.npz")["r"]
        except (OSError, ValueError, KeyError) as exc:
            log.error("cannot reload state from %s (%s); preparing anew", directory, exc)
            return None
        pdf = settings.pdf_settings(r)
        engine = prepare_model(model, pdf, r)
        analyzer = cls(settings, model, engine, np.asarray(masks, bool), surrogate, directory)
        analyzer._frames = int(meta.get("frames", 0))
        log.info(
            "reloaded model %s from %s (%d frames so far)",
            settings.name,
            directory,
            analyzer._frames,
        )
        return analyzer

    # ----------------------------------------------------------------- per frame
    def _overrides(self, frame: Frame) -> dict[str, Any]:
        """Validated per-run overrides from the start document, checked once per run."""
        from motex_stream.stream.config import validate_overrides

        cached = self._run_overrides.get(frame.source)
        if cached is None:
            raw = frame.run_metadata.get("motex_overrides") or {}
            cached = validate_overrides(raw)[0] if isinstance(raw, dict) else {}
            if len(self._run_overrides) > 64:
                self._run_overrides.clear()
            self._run_overrides[frame.source] = cached
        return cached

    def _refit_indices(self, refit: int, seq: int) -> np.ndarray:
        n = len(self.catalogue)
        if refit >= n:
            return np.arange(n)
        rng = np.random.default_rng((self.settings.seed, seq))
        return np.sort(rng.choice(n, size=refit, replace=False))

    def analyze(self, frame: Frame) -> FrameResult:
        timing: dict[str, float] = {}
        t = time.perf_counter()
        frame = validate_frame(frame)
        g = regrid(frame, self.fit_r)
        if not np.any(g):
            raise FrameError(f"frame {frame.seq} of {frame.source}: G is zero everywhere")
        overrides = self._overrides(frame)
        refit = int(overrides.get("refit", self.settings.refit))
        zoom = str(overrides.get("zoom", self.settings.zoom))
        timing["regrid"] = time.perf_counter() - t

        t = time.perf_counter()
        idx = self._refit_indices(refit, frame.seq)
        masks = self.catalogue[idx]
        fits = _fit(self.engine, masks, g, zoom)
        timing["fit"] = time.perf_counter() - t

        t = time.perf_counter()
        update = self.surrogate.update(self._features[idx], fits.rwp)
        timing["train"] = time.perf_counter() - t

        t = time.perf_counter()
        shap = self._shap.update(
            self.surrogate.booster, rebuilt=update.rebuilt, generation=self.surrogate.generation
        )
        contrib = atom_contributions(shap, self.catalogue)
        timing["explain"] = time.perf_counter() - t
        self._frames += 1

        best = int(np.argmin(fits.rwp))
        spread = np.sqrt(contrib.spread_kept**2 + contrib.spread_removed**2)
        contributions = [
            {"atom": a, "element": e, "value": _num(v), "spread": _num(s)}
            for a, e, v, s in zip(self._atoms, self._elements, contrib.value, spread, strict=True)
        ]
        return FrameResult(
            model=self.name,
            contributions=contributions,
            best={
                "mask": masks[best].astype(int).tolist(),
                "rwp": float(fits.rwp[best]),
                "scale": float(fits.scale[best]),
                "zoom": fits.zoom[best].tolist(),
            },
            timing=timing,
            model_quality={
                "mae": float(update.mae),
                "n_trees": float(update.n_trees),
                "rebuilt": float(update.rebuilt),
                "fits_per_s": len(idx) / max(timing["fit"], 1e-9),
            },
            n_refit=len(idx),
        )

    def from_scratch(self, frame: Frame) -> tuple[np.ndarray, FitResults]:
        """A full offline analysis of one frame (fresh search + model): the reference the
        warm-started values are checked against. Returns (contribution values, fits)."""
        from motex_stream.explain.contributions import shap_values

        frame = validate_frame(frame)
        g = regrid(frame, self.fit_r)
        fits = _fit(self.engine, self.catalogue, g, self.settings.zoom)
        trained = train(
            self._features, fits.rwp, seed=self.settings.seed, n_calls=self.settings.search_calls
        )
        values = atom_contributions(shap_values(trained.booster, self._features), self.catalogue)
        return values.value, fits


def _frame_rounds(requested: int, depth: int) -> int:
    """Rounds per frame: as requested, but no more than the per-frame SHAP budget allows."""
    return max(1, min(requested, rounds_for_budget(depth, FRAME_SHAP_BUDGET)))


def _num(v: float) -> float | None:
    return None if not np.isfinite(v) else float(v)


def _fit(engine: PreparedModel, masks: np.ndarray, g: np.ndarray, zoom: str) -> FitResults:
    if zoom == "anisotropic":
        prep_tables(engine)
        return fit_anisotropic(engine, masks, g)
    if zoom != "isotropic":
        raise FrameError(f"unknown zoom mode {zoom!r}")
    return fit_isotropic(engine, masks, g)
