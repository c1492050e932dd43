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

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from motex_stream.analysis import steps
from motex_stream.analysis.pipeline import search_trace
from motex_stream.analysis.settings import LiveModelSettings, settings_for_run
from motex_stream.catalogue import Catalogue
from motex_stream.explain.contributions import ShapCache, atom_contributions
from motex_stream.fitting.results import FitResults
from motex_stream.model.gbdt import (
    FRAME_SHAP_BUDGET,
    IncrementalSurrogate,
    features,
    rounds_for_budget,
)
from motex_stream.pdf.batched import PreparedModel
from motex_stream.stream.analyzer_protocol import FrameResult
from motex_stream.stream.frames import Frame, FrameError, regrid, validate_frame
from motex_stream.stream.liveview import best_fit, structure
from motex_stream.structure.starting_model import StartingModel

log = logging.getLogger(__name__)

STATE_VERSION = 2


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def reference_data(settings: LiveModelSettings, reference: Frame | Path) -> steps.FitData:
    """The fit data of a reference ``.gr`` file or frame, through the one science step.

    A frame from a ``.gr`` series carries its header's Q range, so preparing on frame 1 of a
    replay uses the same Q range as ``analyze`` of that file.
    """
    if isinstance(reference, Frame):
        try:
            frame = validate_frame(reference)
            return steps.fit_data(
                frame.r,
                frame.g,
                settings,
                header_q=(frame.qmin, frame.qmax),
                origin=f"frame {frame.seq} of {frame.source}",
            )
        except ValueError as exc:
            raise FrameError(str(exc)) from None
    return steps.load_fit_data(reference, settings)


class MotexFrameAnalyzer:
    """A prepared starting model that turns each frame into atom contribution values.

    ``settings`` are the model's settings with the Q range resolved (from the reference data
    header, else the fallback); ``configured`` are the settings as configured, whose
    fingerprint decides whether a saved state may be reused.
    """

    def __init__(
        self,
        settings: LiveModelSettings,
        model: StartingModel,
        engine: PreparedModel,
        catalogue: np.ndarray,
        surrogate: IncrementalSurrogate,
        state_dir: Path | None = None,
        configured: LiveModelSettings | None = None,
        search: list[dict[str, Any]] | None = None,
    ) -> None:
        self.settings = settings
        self.configured = configured or settings
        self.name = settings.name
        self.model = model
        self.engine = engine
        self.catalogue = catalogue
        self.surrogate = surrogate
        self.state_dir = state_dir
        self.search = search or []
        self._features = features(catalogue)
        self._shap = ShapCache(self._features)
        if surrogate.n_trees + surrogate.rounds_per_frame <= surrogate.max_trees:
            # explain the current trees now (start-up), so frame 1 pays only for its new trees
            self._shap.update(surrogate.booster, generation=surrogate.generation)
        self._frames = 0
        self._run_settings: dict[str, LiveModelSettings] = {}
        self._described: set[str] = set()  # runs whose message carried the model (live views)
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
        """Load persisted state if it matches the settings, else prepare from scratch.

        Preparation is :mod:`motex_stream.analysis.steps`, exactly as ``analyze`` runs it:
        catalogue, engine, fits, searched surrogate. Only the surrogate's wrapper (warm start
        with a tree cap) is the live path's own.
        """
        model = steps.load_model(settings)
        directory = state_dir / settings.name if state_dir else None
        if directory is not None:
            loaded = cls._load_state(settings, model, directory)
            if loaded is not None:
                return loaded
        if reference is None:
            raise FrameError(f"model {settings.name}: no reference G and no saved state")
        data = reference_data(settings, reference)
        resolved = data.settings
        assert isinstance(resolved, LiveModelSettings)
        t0 = time.perf_counter()
        engine = steps.prepare_engine(model, resolved, data.r)
        masks = steps.make_catalogue(model, resolved)
        fits = steps.fit_masks(engine, masks, data.g, resolved.zoom)
        trained = steps.train_surrogate(masks, fits.rwp, resolved)
        surrogate = IncrementalSurrogate(
            trained,
            rounds_per_frame=_frame_rounds(resolved.rounds, trained.params.max_depth),
            max_trees=resolved.max_trees,
            rebuild_trees=max(1, resolved.max_trees // 3),
            seed=resolved.seed,
        )
        log.info(
            "prepared model %s: %d motifs, %d trees, test MAE %.4f in %.1f s",
            resolved.name,
            len(masks),
            surrogate.n_trees,
            trained.test_mae,
            time.perf_counter() - t0,
        )
        analyzer = cls(
            resolved,
            model,
            engine,
            masks,
            surrogate,
            state_dir=directory,
            configured=settings,
            search=search_trace(trained.search_history),
        )
        analyzer.save_state()
        return analyzer

    # ----------------------------------------------------------------- persistence
    def save_state(self) -> None:
        """Catalogue, booster and metadata, each written atomically (restart-safe)."""
        if self.state_dir is None:
            return
        self.state_dir.mkdir(parents=True, exist_ok=True)
        Catalogue(self.catalogue, self.settings.generator, self.settings.seed).save(
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
                "fingerprint": self.configured.fingerprint(),
                "settings": self.settings.model_dump(mode="json"),
                "hyperparameters": self.surrogate.params.to_dict(),
                "search": self.search,
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
            saved = meta["settings"]
            resolved = settings.with_q_range(saved["qmin"], saved["qmax"])
            masks = Catalogue.load(directory / "catalogue.npz").masks
            surrogate = IncrementalSurrogate.load(directory / "surrogate")
            surrogate.rounds_per_frame = _frame_rounds(settings.rounds, surrogate.params.max_depth)
            r = np.load(directory / "grid.npz")["r"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.error("cannot reload state from %s (%s); preparing anew", directory, exc)
            return None
        assert isinstance(resolved, LiveModelSettings)
        engine = steps.prepare_engine(model, resolved, r)
        analyzer = cls(
            resolved,
            model,
            engine,
            np.asarray(masks, bool),
            surrogate,
            directory,
            configured=settings,
            search=list(meta.get("search", [])),
        )
        analyzer._frames = int(meta.get("frames", 0))
        log.info(
            "reloaded model %s from %s (%d frames so far)",
            settings.name,
            directory,
            analyzer._frames,
        )
        return analyzer

    # ----------------------------------------------------------------- per frame
    def run_settings(self, frame: Frame) -> LiveModelSettings:
        """The settings of the frame's run: per-run overrides applied, validated once per run."""
        cached = self._run_settings.get(frame.source)
        if cached is None:
            cached, _ = settings_for_run(
                self.settings, frame.run_metadata.get("motex_overrides") or {}
            )
            if len(self._run_settings) > 64:
                self._run_settings.clear()
            self._run_settings[frame.source] = cached
        return cached

    def _refit_indices(self, refit: int, seq: int) -> np.ndarray:
        n = len(self.catalogue)
        if refit >= n:
            return np.arange(n)
        rng = np.random.default_rng((self.settings.seed, seq))
        return np.sort(rng.choice(n, size=refit, replace=False))

    def _frame_g(self, frame: Frame) -> tuple[Frame, np.ndarray]:
        frame = validate_frame(frame)
        g = regrid(frame, self.fit_r)
        if not np.any(g):
            raise FrameError(f"frame {frame.seq} of {frame.source}: G is zero everywhere")
        return frame, g

    def analyze(self, frame: Frame) -> FrameResult:
        timing: dict[str, float] = {}
        t = time.perf_counter()
        frame, g = self._frame_g(frame)
        run = self.run_settings(frame)
        timing["regrid"] = time.perf_counter() - t

        t = time.perf_counter()
        idx = self._refit_indices(run.refit, frame.seq)
        masks = self.catalogue[idx]
        fits = steps.fit_masks(self.engine, masks, g, run.zoom)
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
            fit=best_fit(self.engine, masks[best], fits.scale[best], fits.zoom[best], g),
            structure=self._describe_once(frame.source),
        )

    def _describe_once(self, run: str) -> dict[str, Any] | None:
        """The model's coordinates on the first frame of each run, else None."""
        if run in self._described:
            return None
        if len(self._described) > 64:
            self._described.clear()
        self._described.add(run)
        return structure(self.engine)

    def from_scratch(self, frame: Frame) -> tuple[np.ndarray, FitResults]:
        """A full offline analysis of one frame (fresh search + model), through the same
        science steps as ``analyze``: the reference the warm-started values are checked
        against. Returns (contribution values, fits)."""
        _, g = self._frame_g(frame)
        fits = steps.fit_masks(self.engine, self.catalogue, g, self.settings.zoom)
        trained = steps.train_surrogate(self.catalogue, fits.rwp, self.settings)
        _, values = steps.explain(trained, self.catalogue)
        return values.value, fits


def _frame_rounds(requested: int, depth: int) -> int:
    """Rounds per frame: as requested, but no more than the per-frame SHAP budget allows."""
    return max(1, min(requested, rounds_for_budget(depth, FRAME_SHAP_BUDGET)))


def _num(v: float) -> float | None:
    return None if not np.isfinite(v) else float(v)
