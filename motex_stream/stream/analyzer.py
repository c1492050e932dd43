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
import math
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from motex_stream.analysis import steps
from motex_stream.analysis.pipeline import search_trace
from motex_stream.analysis.settings import LiveModelSettings, settings_for_run
from motex_stream.catalogue import Catalogue
from motex_stream.explain.confidence import interval, sampling_error, welch_df
from motex_stream.explain.confirmation import demote
from motex_stream.explain.contributions import AtomContributions, ShapCache
from motex_stream.fitting.results import FitResults
from motex_stream.model.gbdt import (
    FRAME_SHAP_BUDGET,
    IncrementalSurrogate,
    features,
    rounds_for_budget,
)
from motex_stream.pdf.batched import PreparedModel
from motex_stream.stream.analyzer_protocol import FrameResult
from motex_stream.stream.changes import KeepSetChangeDetector
from motex_stream.stream.frames import Frame, FrameError, regrid, validate_frame
from motex_stream.stream.journal import fsync_dir, write_atomic
from motex_stream.stream.live_intervals import RotatingEnsemble
from motex_stream.stream.liveview import best_fit, structure
from motex_stream.structure.starting_model import StartingModel

log = logging.getLogger(__name__)

STATE_VERSION = 3  # 3: generation folders committed by state.json
_GENERATION = re.compile(r"g\d{6}")


class StateError(ValueError):
    """A saved state that cannot be used as it is (corrupt, incomplete, out of range)."""


class StateMismatchError(StateError):
    """A saved state prepared with other settings or by another version."""


def _check_grid(r: np.ndarray, settings: LiveModelSettings) -> None:
    """The saved fit grid must be one the settings could have produced."""
    if r.ndim != 1 or r.size < 10:
        raise StateError(f"fit grid of shape {r.shape} (need a 1-D grid of at least 10 points)")
    if not np.all(np.isfinite(r)) or np.any(np.diff(r) <= 0):
        raise StateError("fit grid is not finite and strictly increasing")
    step = float(np.median(np.diff(r)))
    if abs(r[0] - settings.rmin) > step or abs(r[-1] - settings.rmax) > step:
        raise StateError(
            f"fit grid spans {r[0]:.3f}..{r[-1]:.3f} Å, settings say "
            f"{settings.rmin}..{settings.rmax} Å"
        )


def _fsync_path(path: Path) -> None:
    if path.is_file():
        with open(path, "rb") as fh:
            os.fsync(fh.fileno())
    elif path.is_dir():
        fsync_dir(path)


#: The change detectors' state in the state folder, written after every frame (small JSON).
CHANGES_FILE = "changes.json"


def _remove_leftovers(directory: Path, keep: str) -> None:
    """Delete what an interrupted save (or the previous state layout) left behind."""
    for path in directory.iterdir():
        if path.name in ("state.json", CHANGES_FILE, keep):
            continue
        log.info("removing leftover %s", path)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _move_aside(directory: Path, why: str) -> None:
    """Keep unusable state for inspection, out of the way of a fresh preparation."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = directory.with_name(f"{directory.name}.bad-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = directory.with_name(f"{directory.name}.bad-{stamp}-{n}")
    os.replace(directory, target)
    log.error("state in %s unusable (%s); moved to %s, preparing anew", directory, why, target)


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
        # a catalogue larger than explain_rows is explained on the same seeded subsample
        # every frame (steps.explain_sample, as analyze does): SHAP's per-frame cost is
        # then bounded by explain_rows, and the sampling error carries the difference
        self._explained = steps.explain_sample(len(catalogue), settings.explain_rows, settings.seed)
        if self._explained is None:
            self._explained_masks, self._explained_features = catalogue, self._features
        else:
            self._explained_masks = np.asarray(catalogue)[self._explained]
            self._explained_features = self._features[self._explained]
        self._shap = ShapCache(self._explained_features)
        if surrogate.n_trees + surrogate.rounds_per_frame <= surrogate.max_trees:
            # explain the current trees now (start-up), so frame 1 pays only for its new trees
            self._shap.update(surrogate.booster, generation=surrogate.generation)
        # rebuilds train (and are explained) in a worker thread, swapped in a frame later
        surrogate.start_background_rebuilds(self._shap.prepare)
        self._frames = 0
        self._saved_frames = 0
        self._generation = 0
        self.save_every: int | None = None  # frames between saves of warm-start progress
        self.save_interval: float | None = None  # or seconds, whichever comes first
        self._saved_mono = time.monotonic()
        self._run_settings: dict[str, LiveModelSettings] = {}
        self._described: set[str] = set()  # runs whose message carried the model (live views)
        self._changes: dict[str, KeepSetChangeDetector] = {}  # keep-set change, per run
        self._ensemble: RotatingEnsemble | None = None  # live interval members (ci_models ≥ 2)
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
            loaded = cls.load(settings, model, directory)
            if loaded is not None:
                return loaded
        if reference is None:
            raise FrameError(f"model {settings.name}: no reference G and no saved state")
        data = reference_data(settings, reference)
        resolved = data.settings
        assert isinstance(resolved, LiveModelSettings)
        t0 = time.perf_counter()
        engine = steps.prepare_engine(model, resolved, data.r)
        # Bool, not packed: a live catalogue is small (10^3-10^4 motifs), the analyzer holds
        # its feature matrix anyway, and every frame indexes it; it is saved packed.
        masks = np.asarray(steps.make_catalogue(model, resolved))
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
        """Persist everything a restart needs, as one atomic commit.

        The files go into a fresh generation folder (``gNNNNNN/``: catalogue, grid, surrogate),
        each fsync'ed; then ``state.json``, which names that folder, is replaced atomically
        (write, fsync, rename). A kill at any point leaves the previous commit intact; the
        leftovers of an interrupted save are removed on the next load or save.
        """
        if self.state_dir is None:
            return
        d = self.state_dir
        d.mkdir(parents=True, exist_ok=True)
        self._generation += 1
        name = f"g{self._generation:06d}"
        gen = d / name
        if gen.exists():
            shutil.rmtree(gen)
        gen.mkdir()
        Catalogue(self.catalogue, self.settings.generator, self.settings.seed).save(
            gen / "catalogue.npz"
        )
        np.savez(gen / "grid.npz", r=self.engine.r_data)
        self.surrogate.save(gen / "surrogate")
        for path in sorted(gen.rglob("*"), reverse=True):
            _fsync_path(path)
        fsync_dir(gen)
        meta = {
            "version": STATE_VERSION,
            "fingerprint": self.configured.fingerprint(),
            "generation": name,
            "settings": self.settings.model_dump(mode="json"),
            "hyperparameters": self.surrogate.params.to_dict(),
            "search": self.search,
            "frames": self._frames,
            "saved_at": time.time(),
        }
        write_atomic(d / "state.json", json.dumps(meta, indent=1).encode())
        self._saved_frames = self._frames
        self._saved_mono = time.monotonic()
        _remove_leftovers(d, keep=name)

    def maybe_save(self) -> None:
        """Save after ``save_every`` frames or ``save_interval`` s with new frames, whichever
        comes first; a failure is logged, never raised (the frame is still published)."""
        new = self._frames - self._saved_frames
        by_count = self.save_every is not None and new >= self.save_every
        by_time = (
            self.save_interval is not None
            and new > 0
            and time.monotonic() - self._saved_mono >= self.save_interval
        )
        if not (by_count or by_time):
            return
        try:
            self.save_state()
        except OSError as exc:
            self._saved_frames = self._frames  # try again after another save_every frames
            log.error("model %s: cannot save state in %s: %s", self.name, self.state_dir, exc)

    @classmethod
    def restore(cls, settings: LiveModelSettings, state_dir: Path) -> MotexFrameAnalyzer | None:
        """The model saved under ``state_dir``, or None when there is none usable."""
        directory = state_dir / settings.name
        if not directory.exists() and not directory.is_symlink():
            return None
        return cls.load(settings, steps.load_model(settings), directory)

    @classmethod
    def load(
        cls, settings: LiveModelSettings, model: StartingModel, directory: Path
    ) -> MotexFrameAnalyzer | None:
        """The analyzer saved in ``directory``, or None (nothing there, or nothing usable).

        Every file is checked before use (versions, shapes, ranges, the grid). State that does
        not match the settings or fails a check is logged in one line and moved aside to
        ``<directory>.bad-<time>`` for inspection, so the caller prepares anew; the service
        never crash-loops on its own state.
        """
        if not directory.exists() and not directory.is_symlink():
            return None
        try:
            if not directory.is_dir():
                raise StateError("the state path is not a folder")
            if not (directory / "state.json").exists():
                if any(directory.iterdir()):
                    raise StateError("files but no state.json (an interrupted first save)")
                return None
            analyzer = cls._read_state(settings, model, directory)
        except StateMismatchError as exc:
            _move_aside(directory, f"state was prepared with other settings ({exc})")
            return None
        except Exception as exc:  # corrupt state of any kind: never fatal
            _move_aside(directory, f"{type(exc).__name__}: {exc}")
            return None
        _remove_leftovers(directory, keep=analyzer._generation_name)
        analyzer._changes = _read_changes(directory / CHANGES_FILE)
        log.info(
            "reloaded model %s from %s (%d frames so far)",
            settings.name,
            directory,
            analyzer._frames,
        )
        return analyzer

    @classmethod
    def _read_state(
        cls, settings: LiveModelSettings, model: StartingModel, directory: Path
    ) -> MotexFrameAnalyzer:
        meta = json.loads((directory / "state.json").read_text())
        if not isinstance(meta, dict):
            raise StateError(f"state.json holds a {type(meta).__name__}, not a mapping")
        if meta.get("version") != STATE_VERSION:
            raise StateMismatchError(f"state version {meta.get('version')!r} != {STATE_VERSION}")
        if meta.get("fingerprint") != settings.fingerprint():
            raise StateMismatchError("fingerprint differs")
        name = meta.get("generation")
        if not isinstance(name, str) or not _GENERATION.fullmatch(name):
            raise StateError(f"generation {name!r} is not a generation folder name")
        gen = directory / name
        saved = meta.get("settings")
        if not isinstance(saved, dict):
            raise StateError("settings missing")
        qmin, qmax = saved.get("qmin"), saved.get("qmax")
        if not all(isinstance(q, int | float) and math.isfinite(q) for q in (qmin, qmax)):
            raise StateError(f"Q range {qmin!r}..{qmax!r} is not numeric")
        if not 0 <= qmin < qmax:
            raise StateError(f"Q range {qmin}..{qmax} is not a range")
        frames = meta.get("frames", 0)
        if isinstance(frames, bool) or not isinstance(frames, int) or frames < 0:
            raise StateError(f"frames {frames!r} is not a count")
        search = meta.get("search", [])
        if not isinstance(search, list):
            raise StateError("search is not a list")
        resolved = settings.with_q_range(qmin, qmax)
        assert isinstance(resolved, LiveModelSettings)

        masks = np.asarray(Catalogue.load(gen / "catalogue.npz").masks, bool)
        n_atoms = len(model.permutable)
        if masks.ndim != 2 or masks.shape[1] != n_atoms or len(masks) < 2:
            raise StateError(f"catalogue of shape {masks.shape} for {n_atoms} permutable atoms")
        if len(masks) > settings.catalogue_size:
            raise StateError(f"catalogue of {len(masks)} motifs > {settings.catalogue_size}")

        with np.load(gen / "grid.npz", allow_pickle=False) as grid:
            r = np.asarray(grid["r"], dtype=float)
        _check_grid(r, resolved)

        surrogate = IncrementalSurrogate.load(gen / "surrogate")
        n_features = features(masks[:1]).shape[1]
        if surrogate.booster.num_features() != n_features:
            raise StateError(
                f"surrogate expects {surrogate.booster.num_features()} features, the catalogue "
                f"gives {n_features}"
            )
        if surrogate.n_trees < 1:
            raise StateError("surrogate has no trees")
        if not np.all(np.isfinite(surrogate.predict(masks[:8]))):
            raise StateError("surrogate predicts non-finite values")
        surrogate.rounds_per_frame = _frame_rounds(settings.rounds, surrogate.params.max_depth)

        engine = steps.prepare_engine(model, resolved, r)
        analyzer = cls(
            resolved,
            model,
            engine,
            masks,
            surrogate,
            directory,
            configured=settings,
            search=search,
        )
        analyzer._frames = analyzer._saved_frames = frames
        analyzer._generation = int(name[1:])
        return analyzer

    @property
    def _generation_name(self) -> str:
        return f"g{self._generation:06d}"

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
        contrib = steps.explained_contributions(
            shap, self._explained_masks, self._explained, len(self.catalogue)
        )
        timing["explain"] = time.perf_counter() - t

        t = time.perf_counter()
        sd, df = self._interval_sd(run, contrib, shap, idx, fits.rwp)
        low, high, label = interval(contrib.value, sd, run.ci_level, df)
        timing["intervals"] = time.perf_counter() - t

        t = time.perf_counter()
        confirmation = steps.confirmation(self.engine, g, label, run)
        if confirmation is not None:
            label = demote(label, confirmation)
        timing["confirm"] = time.perf_counter() - t
        self._frames += 1
        self.maybe_save()

        best = int(np.argmin(fits.rwp))
        spread = np.sqrt(contrib.spread_kept**2 + contrib.spread_removed**2)
        contributions = [
            {
                "atom": a,
                "element": e,
                "value": _num(v),
                "spread": _num(s),
                "ci_low": _num(lo),
                "ci_high": _num(hi),
                "label": lab,
            }
            for a, e, v, s, lo, hi, lab in zip(
                self._atoms, self._elements, contrib.value, spread, low, high, label, strict=True
            )
        ]
        return FrameResult(
            model=self.name,
            contributions=contributions,
            change=self._change(frame, run, contributions, df),
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

    def _interval_sd(
        self,
        run: LiveModelSettings,
        contrib: AtomContributions,
        shap: np.ndarray,
        idx: np.ndarray,
        rwp: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """SD of each live value and its degrees of freedom: the SHAP-mean sampling error,
        plus the rotating ensemble's spread when ``ci_models`` ≥ 2 (see
        :mod:`motex_stream.stream.live_intervals`).

        The ensemble's spread is the RMS of ``ci_models`` deviations from the main model, so
        it carries ``ci_models`` degrees of freedom; the interval then takes Student's t
        quantile with the Welch–Satterthwaite degrees of freedom, exactly as the offline
        intervals do (:func:`motex_stream.explain.confidence.welch_df`). The sampling error
        alone counts as exact (normal quantile, ``None``)."""
        se = sampling_error(contrib)
        if run.ci_models < 2:
            return se, None
        ens = self._ensemble
        if (
            ens is None
            or len(ens.members) != run.ci_models
            or ens.rows != min(run.ci_rows, len(self._explained_masks))
        ):
            # the ensemble's rows are drawn from the explained ones: its deviations are taken
            # from the main model's SHAP, which exists for those rows only
            ens = self._ensemble = RotatingEnsemble(
                self._explained_features,
                self._explained_masks,
                run.ci_models,
                run.ci_rows,
                self.settings.seed,
            )
        ens_sd = ens.update(self.surrogate, shap, self._features[idx], rwp)
        df = welch_df(ens_sd**2, len(ens.members), se**2)
        return np.sqrt(se**2 + ens_sd**2), df

    def _change(
        self,
        frame: Frame,
        run: LiveModelSettings,
        contributions: list[dict[str, Any]],
        df: np.ndarray | None,
    ) -> dict[str, Any] | None:
        """A persistent change of the keep set within the frame's run (one detector per run)."""
        detector = self._changes.get(frame.source)
        if detector is None:
            if len(self._changes) > 64:
                self._changes.clear()
            detector = self._changes[frame.source] = KeepSetChangeDetector(
                persist=run.change_frames, level=run.ci_level
            )
        change = detector.update(frame.seq, contributions, None if df is None else df.tolist())
        self._save_changes()
        return change

    def _save_changes(self) -> None:
        """Persist every run's change detector, so a change in progress survives a restart;
        a failure is logged, never raised (the frame is still published)."""
        if self.state_dir is None:
            return
        data = {run: det.state() for run, det in self._changes.items()}
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            write_atomic(self.state_dir / CHANGES_FILE, json.dumps(data).encode())
        except OSError as exc:
            log.error("model %s: cannot save change detection state: %s", self.name, exc)

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
        _, values = steps.explain(
            trained, self.catalogue, rows=self.settings.explain_rows, seed=self.settings.seed
        )
        return values.value, fits


def _read_changes(path: Path) -> dict[str, KeepSetChangeDetector]:
    """The change detectors saved in ``path`` (none saved: empty). Unreadable state is logged
    and dropped: change detection then starts afresh, the model state is still used."""
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
        return {str(run): KeepSetChangeDetector.from_state(d) for run, d in data.items()}
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        log.warning("change detection state %s unusable (%s); starting it afresh", path, exc)
        return {}


def _frame_rounds(requested: int, depth: int) -> int:
    """Rounds per frame: as requested, but no more than the per-frame SHAP budget allows."""
    return max(1, min(requested, rounds_for_budget(depth, FRAME_SHAP_BUDGET)))


def _num(v: float) -> float | None:
    return None if not np.isfinite(v) else float(v)
