"""The live ML-MotEx analysis of one starting model, frame after frame.

Preparation (once per model, persisted): catalogue, batched engine on the fit grid, a fit of
the whole catalogue to a reference G (or the first frame), a Bayesian hyperparameter search
and a first GBDT. Per frame: refit a subsample of the catalogue to the new G (batched engine),
continue boosting the GBDT on those fresh Rwp values (warm start, bounded by periodic
rebuilds; see :class:`~motex_stream.model.incremental.IncrementalSurrogate`), update TreeSHAP over
the catalogue incrementally (only new trees are explained) and turn it into atom
contribution values.

**A rebuilt frame is the offline answer of that frame** (issue 20). A rebuild (the tree cap
reached, or drift) trains, in line and on the frame itself, the model ``analyze`` trains:
:func:`steps.train_surrogate` on every motif of the catalogue refitted to this frame, with
the serving search (``search=``: no new search), the same split, early stopping and seed; no
warm-start tree is added on top, and the interval ensemble is built from the same fits by
the offline code. So the frame's values, intervals and labels are those of ``analyze`` of
the frame given that search (``run_analysis(..., search=analyzer.search)``), bit for bit;
what separates them from ``analyze`` with its own search is that search's noise, measured in
``benchmarks/bench_live_parity.py``. ``rebuild_every`` = k rebuilds at least every k frames
(1: every frame is the offline answer given the live search). Why in line and not in a
background thread, as until issue 20: a model built in the background on frame k serves from
frame k+1 on, with k+1's warm-start trees on top, so no frame ever had its own offline
model. Cost of a rebuilt frame:
the fit of every motif, one training and one full SHAP pass with the given hyperparameters,
and the ensemble's trainings (measured on 10⁴ motifs, one core: 0.4 + 0.4 + 0.6 + 1.2 s;
a search would add ~23 s). Warm-start frames between rebuilds stay approximate (at most
two frames of warm-start trees beyond a fresh fit at the smallest cap). With ``refit`` below
the catalogue, a frame found drifting only after its warm start is rebuilt on the motifs it
refitted, not on the catalogue that ``analyze`` fits.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, overload

import numpy as np

from motex_stream.analysis import steps
from motex_stream.analysis.settings import LiveModelSettings, settings_for_run
from motex_stream.explain.confidence import combined_sd, interval, sampling_error
from motex_stream.explain.contributions import AtomContributions, ShapCache
from motex_stream.explain.refine import RefinedMotif
from motex_stream.fitting.results import FitResults
from motex_stream.model.features import features
from motex_stream.model.hyperparameters import FRAME_SHAP_BUDGET, rounds_for_budget
from motex_stream.model.incremental import IncrementalSurrogate
from motex_stream.model.search import search_trace
from motex_stream.model.training import TrainedModel
from motex_stream.pdf.batched import PreparedModel
from motex_stream.stream.frames import Frame, FrameError, ValidFrame, regrid, validate_frame
from motex_stream.stream.live import live_state
from motex_stream.stream.live.analyzer_protocol import (
    AtomValues,
    BestFit,
    FrameResult,
    KeepSetChange,
    ModelDrawing,
    ModelQuality,
)
from motex_stream.stream.live.changes import KeepSetChangeDetector
from motex_stream.stream.live.fit_ahead import AheadKey, FitAhead
from motex_stream.stream.live.live_intervals import LiveEnsemble, member_params
from motex_stream.stream.live.liveview import best_fit, structure
from motex_stream.stream.live.runs import LiveRuns
from motex_stream.structure.starting_model import StartingModel
from motex_stream.structure.symmetry import Sites

log = logging.getLogger(__name__)


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
        shap: live_state.SavedShap | None = None,
        preparation: str | None = None,
        dask: str | None = None,
    ) -> None:
        self.settings = settings
        #: the Dask scheduler every catalogue refit runs on (``[service] dask``; None: here),
        #: as ``analyze --dask`` runs its catalogue fit; the small passes fit here
        self.dask = dask
        self.configured = configured or settings
        self.name = settings.name
        self.model = model
        self.engine = engine
        self.catalogue = catalogue
        self.surrogate = surrogate
        self.state_dir = state_dir
        self.search = search or []
        #: the search points the serving model's interval members take (member_params): the
        #: preparation's search, then each rebuild's re-scored points
        self.member_points: list[dict[str, Any]] = list(self.search)
        #: what was prepared (live_state.preparation_digest), kept across rebuilds and
        #: restarts: a run's analysis identity hashes it, not the serving search
        self.preparation = preparation or live_state.preparation_digest(
            self.configured, catalogue, engine.r_data, self.search, surrogate.params.to_dict()
        )
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
        # a warm restart takes up the saved SHAP of the serving trees (live_state.SavedShap)
        restored = shap is not None and shap.restore(self._shap, surrogate, self._explained)
        if not restored and surrogate.n_trees + surrogate.rounds_per_frame <= surrogate.max_trees:
            # explain the current trees now (start-up), so frame 1 pays only for its new trees
            self._shap.update(surrogate.booster, generation=surrogate.generation)
        # rebuilds train the offline model of the rebuilt frame, in line (module doc)
        surrogate.trainer = self._train_fresh
        self._frames = 0
        self._saved_frames = 0
        self._generation = 0
        self.save_every: int | None = None  # frames between saves of warm-start progress
        self.save_interval: float | None = None  # or seconds, whichever comes first
        self._saved_mono = time.monotonic()
        self.state_save_failures = 0  # saves that failed (logged; see live_state.save_state)
        self.state_load_fallbacks = 0  # 1: loaded from the previous generation (live_state.load)
        self._state_record: dict[str, Any] | None = None  # the commit in use (state.json)
        self._runs = LiveRuns()  # per run: settings, change detector, model sent (bounded)
        self._ensemble: LiveEnsemble | None = None  # live interval members (ci_models ≥ 2)
        self._elements = [model.symbols[i] for i in model.permutable]
        self._site_cache: Sites | None = None
        self._atoms = (model.permutable + 1).tolist()
        #: the frame's ``rebuild_search`` (a runtime setting), for a rebuild's _train_fresh
        self._rebuild_search = settings.rebuild_search
        #: the next frame's refit, done beside this frame's training (fit_ahead module doc)
        self.ahead = FitAhead()
        self._announced: ValidFrame | None = None  # the frame the service hands over next

    # ----------------------------------------------------------------- preparation
    @property
    def fit_r(self) -> np.ndarray:
        return self.engine.r_data

    @overload
    @classmethod
    def prepare(
        cls,
        settings: LiveModelSettings,
        reference: Frame | Path,
        state_dir: Path | None = None,
        dask: str | None = None,
    ) -> MotexFrameAnalyzer: ...

    @overload
    @classmethod
    def prepare(
        cls,
        settings: LiveModelSettings,
        reference: None = None,
        state_dir: Path | None = None,
        dask: str | None = None,
    ) -> MotexFrameAnalyzer | None: ...

    @classmethod
    def prepare(
        cls,
        settings: LiveModelSettings,
        reference: Frame | Path | None = None,
        state_dir: Path | None = None,
        dask: str | None = None,
    ) -> MotexFrameAnalyzer | None:
        """The model saved under ``state_dir`` when it is usable (it matches the settings and
        passes every check), else one prepared on ``reference``, else None (nothing saved,
        no reference: the service prepares on the first frame). The one entry of a start,
        warm or cold: the starting model is loaded once, the saved state read once.
        ``dask``: the scheduler address the catalogue fits run on (None: here).

        Preparation is :mod:`motex_stream.analysis.steps`, exactly as ``analyze`` runs it:
        catalogue, engine, fits, searched surrogate. Only the surrogate's wrapper (warm start
        with a tree cap) is the live path's own.
        """
        directory = state_dir / settings.name if state_dir else None
        there = directory is not None and (directory.exists() or directory.is_symlink())
        saved = directory if there else None
        if saved is None and reference is None:
            return None
        model = steps.load_model(settings)
        loaded = None if saved is None else cls.load(settings, model, saved, dask)
        if loaded is not None or reference is None:
            return loaded
        data = reference_data(settings, reference)
        resolved = data.settings
        assert isinstance(resolved, LiveModelSettings)
        t0 = time.perf_counter()
        engine = steps.prepare_engine(model, resolved, data.r)
        # Bool, not packed: a live catalogue is small (10^3-10^4 motifs), the analyzer holds
        # its feature matrix anyway, and every frame indexes it; it is saved packed.
        masks = np.asarray(steps.make_catalogue(model, resolved))
        fits = steps.fit_masks(engine, masks, data.g, resolved.zoom, dask=dask)
        trained = steps.train_surrogate(masks, fits.rwp, resolved)
        surrogate = IncrementalSurrogate(
            trained,
            rounds_per_frame=_frame_rounds(resolved.rounds, trained.params.max_depth),
            max_trees=resolved.max_trees,
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
            dask=dask,
        )
        analyzer.save_state()
        return analyzer

    # ----------------------------------------------------------------- persistence
    # (the layout, checks and recovery are motex_stream.stream.live.live_state's)
    def save_state(self) -> bool:
        """Persist everything a restart needs, as one atomic commit; True when it committed
        (a failure is logged and counted, never raised: see
        :func:`motex_stream.stream.live.live_state.save_state`)."""
        return live_state.save_state(self)

    def maybe_save(self) -> None:
        """Save after ``save_every`` frames or ``save_interval`` s with new frames; a failure
        is logged, never raised (the frame is still published)."""
        live_state.maybe_save(self)

    @classmethod
    def load(
        cls,
        settings: LiveModelSettings,
        model: StartingModel,
        directory: Path,
        dask: str | None = None,
    ) -> MotexFrameAnalyzer | None:
        """The analyzer saved in ``directory``, or None (nothing there, or nothing usable:
        then it is moved aside, see :func:`motex_stream.stream.live.live_state.load`)."""

        def build(saved: live_state.SavedState) -> MotexFrameAnalyzer:
            surrogate = saved.surrogate
            surrogate.rounds_per_frame = _frame_rounds(settings.rounds, surrogate.params.max_depth)
            surrogate.configured_max_trees = settings.max_trees  # a runtime setting
            engine = live_state.prepared_engine(model, saved)
            analyzer = cls(
                saved.resolved,
                model,
                engine,
                saved.masks,
                surrogate,
                directory,
                configured=settings,
                search=saved.search,
                shap=saved.shap,
                preparation=saved.preparation,
                dask=dask,
            )
            analyzer._frames = analyzer._saved_frames = saved.frames
            analyzer._generation = saved.generation
            return analyzer

        return live_state.load(settings, model, directory, build)

    @property
    def _generation_name(self) -> str:
        return live_state.generation_name(self._generation)

    # ----------------------------------------------------------------- per frame
    def run_settings(self, frame: Frame) -> LiveModelSettings:
        """The settings of the frame's run: per-run overrides applied, validated once per run."""
        run = self._runs[frame.source]
        if run.settings is None:
            run.settings, _ = settings_for_run(
                self.settings, frame.run_metadata.get("motex_overrides") or {}
            )
        return run.settings

    def _refit_indices(self, refit: int, seq: int) -> np.ndarray:
        n = len(self.catalogue)
        if refit >= n:
            return np.arange(n)
        rng = np.random.default_rng((self.settings.seed, seq))
        return np.sort(rng.choice(n, size=refit, replace=False))

    def _frame_g(self, frame: Frame) -> tuple[ValidFrame, np.ndarray]:
        frame = validate_frame(frame)  # the frame itself when it is valid already (the service's)
        g = regrid(frame, self.fit_r)
        if not np.any(g):
            raise FrameError(f"frame {frame.seq} of {frame.source}: G is zero everywhere")
        return frame, g

    def analyze(self, frame: Frame) -> FrameResult:
        timing: dict[str, float] = {}
        t = time.perf_counter()
        announced, self._announced = self._announced, None  # for this frame only
        frame, g = self._frame_g(frame)
        run = self.run_settings(frame)
        timing["regrid"] = time.perf_counter() - t

        t = time.perf_counter()
        idx = self._refit_indices(run.refit_count, frame.seq)
        rebuild = self._rebuild_due(run)
        if rebuild:  # fitted on every motif, as analyze fits them
            idx = np.arange(len(self.catalogue))
        masks = self.catalogue[idx]
        ahead = self.ahead.take(AheadKey(frame.source, frame.seq, g, run.zoom, idx))
        if ahead is None:
            t_fit = time.perf_counter()
            fits = steps.fit_masks(self.engine, masks, g, run.zoom, dask=self.dask)
            fit_seconds = time.perf_counter() - t_fit
        else:
            fits, fit_seconds = ahead.fits, ahead.seconds
        if announced is not None:  # the next frame's fit runs beside the rest of this one
            self._start_fit_ahead(announced, run)
        timing["fit"] = time.perf_counter() - t

        t = time.perf_counter()
        self._rebuild_search = run.rebuild_search  # read by _train_fresh, if it rebuilds
        update = self.surrogate.update(self._features[idx], fits.rwp, idx, rebuild=rebuild)
        if update.rebuilt:  # the rebuilt model's depth sets the warm starts' per-frame rounds
            self.surrogate.rounds_per_frame = _frame_rounds(
                run.rounds, self.surrogate.params.max_depth
            )
        self._ensure_ensemble(run)
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
        sd, df = self._interval_sd(run, contrib, idx, fits.rwp)
        low, high, label = interval(contrib.value, sd, run.ci_level, df)
        timing["intervals"] = time.perf_counter() - t

        t = time.perf_counter()
        self.ahead.settle()  # the engine has one user at a time (fit_ahead module doc)
        label = steps.confirmed_labels(self.engine, g, label, run)
        timing["confirm"] = time.perf_counter() - t

        t = time.perf_counter()
        refined, label = self._refine(g, masks, fits.rwp, contrib, label, run)
        if refined is not None:
            timing["refine"] = time.perf_counter() - t
        self._frames += 1
        self.maybe_save()

        best = int(np.argmin(fits.rwp))
        spread = np.sqrt(contrib.spread_kept**2 + contrib.spread_removed**2)
        atoms = AtomValues(
            atom=self._atoms,
            element=self._elements,
            value=contrib.value,
            spread=spread,
            interval=(low, high),
            label=label,
        )
        return FrameResult(
            model=self.name,
            contributions=atoms,
            change=self._change(frame, run, atoms, df),
            best=BestFit(
                mask=masks[best],
                rwp=float(fits.rwp[best]),
                scale=float(fits.scale[best]),
                zoom=fits.zoom[best],
            ),
            timing=timing,
            model_quality=ModelQuality(
                mae=float(update.mae),
                n_trees=int(update.n_trees),
                rebuilt=bool(update.rebuilt),
                generation=int(update.generation),
                # no rebuild is ever started for a later frame (in line, module doc); the
                # field stays in the message for wire compatibility
                rebuild_started=False,
                fits_per_s=len(idx) / max(fit_seconds, 1e-9),
            ),
            n_refit=len(idx),
            extra={} if refined is None else {"refined": self._refined_summary(refined)},
            fit=best_fit(self.engine, masks[best], fits.scale[best], fits.zoom[best], g),
            structure=self._describe_once(frame.source),
        )

    def fit_ahead(self, frame: ValidFrame) -> None:
        """Announce the frame the service will hand to :meth:`analyze` after the next one:
        once that frame's own fit is done, this frame's refit starts on a second thread (see
        :mod:`motex_stream.stream.live.fit_ahead`). A frame announced but not analysed next is
        dropped and counted there."""
        self._announced = frame

    def _start_fit_ahead(self, frame: ValidFrame, current: LiveModelSettings) -> None:
        """Start the refit of ``frame`` in the background, when it can run beside this frame
        (whose run settings are ``current``).

        Only for a run whose settings are known already (its first frame fits in line: the
        settings are made, and their errors logged, by the frame's own :meth:`analyze`), on
        the numpy isotropic engine fitting here: its kernels are serial and release the GIL,
        while the anisotropic engine's parallel kernels must not be entered from two threads
        and torch's and Dask's fits have their own threads. The fit holds BLAS to one thread
        process-wide while it runs; what this frame computes meanwhile (xgboost, the SHAP and
        interval kernels) uses none, but a rebuild with its own search (``rebuild_search``
        "search") does, so beside such a frame nothing is fitted ahead. A frame that cannot
        be fitted is left to its own analyze, which reports it as without the fit ahead."""
        if current.rebuild_search == "search":
            return
        known = self._runs.peek(frame.source)
        run = None if known is None else known.settings
        if run is None or run.zoom != "isotropic" or self.engine.backend.name != "numpy":
            return
        if self.dask is not None:  # the cluster's workers fit it, in their own processes
            return
        try:
            frame, g = self._frame_g(frame)
        except (FrameError, ValueError):
            return
        idx = self._refit_indices(run.refit_count, frame.seq)
        engine, masks, zoom = self.engine, self.catalogue[idx], run.zoom
        self.ahead.start(
            AheadKey(frame.source, frame.seq, g, zoom, idx),
            lambda: steps.fit_masks(engine, masks, g, zoom),
        )

    def _refine(
        self,
        g: np.ndarray,
        masks: np.ndarray,
        rwp: np.ndarray,
        contrib: AtomContributions,
        label: list[str],
        run: LiveModelSettings,
    ) -> tuple[RefinedMotif | None, list[str]]:
        """Motif refinement by direct fits on this frame (``run.frame_refine_fits``; 0: none),
        by ``analyze``'s own steps from the frame's refitted motifs: the refined motif, and the
        labels with every confident one its toggle contradicts made ``uncertain``."""
        if run.frame_refine_fits == 0:
            return None, label
        run = run.model_copy(update={"refine_fits": run.frame_refine_fits})
        refined = steps.refine_motif(
            self.engine,
            g,
            masks,
            rwp,
            contrib,
            label,
            run,
            positions=self.model.positions[self.model.permutable],
        )
        # a budget above 0 always refines, and the labels given come back checked
        assert refined is not None and refined.checked_label is not None
        return refined, refined.checked_label

    def _refined_summary(self, refined: RefinedMotif) -> dict[str, Any]:
        """The refined motif as the message carries it (atom numbers 1-based, as the
        contributions): its atoms, Rwp, per atom the Rwp change when toggled in it (with −
        without; NaN → null), whether its descent converged and the fits it took."""
        return {
            "atoms_kept": [self._atoms[i] for i in refined.atoms()],
            "rwp": refined.rwp,
            "keep_effect": refined.keep_effect,
            "converged": refined.converged,
            "n_fits": refined.n_fits,
        }

    def _ensure_ensemble(self, run: LiveModelSettings) -> None:
        """The live interval ensemble for ``ci_models`` ≥ 2 (see
        :mod:`motex_stream.stream.live.live_intervals`), made (or remade, when ``ci_models`` or
        ``ci_rows`` changed) before the frame's intervals; it builds its members in line on the
        first frame of each surrogate generation."""
        if run.ci_models < 2:
            self._ensemble = None
            return
        ens = self._ensemble
        rows = run.ci_rows
        # members resample the catalogue and use the serving model's search points, as
        # offline: the preparation's search, or a rebuild's re-scored points (_train_fresh)
        params = member_params(self.member_points, self.surrogate.params, run.ci_models)
        if ens is not None and ens.params == params and ens.rows == rows:
            return
        self._ensemble = LiveEnsemble(self.catalogue, params, rows, self.settings.seed)

    def _rebuild_due(self, run: LiveModelSettings) -> bool:
        """This frame is rebuilt (before drift, which shows only after the warm start): the
        next warm start would pass the tree cap, or the serving model has carried
        ``rebuild_every`` − 1 frames of warm-start trees (the count is read off the model,
        so it survives a restart)."""
        s = self.surrogate
        if s.n_trees + s.rounds_per_frame > s.max_trees:
            return True
        if run.rebuild_every <= 0:
            return False
        warm_frames = (s.n_trees - s.base_trees) // s.rounds_per_frame
        return warm_frames + 1 >= run.rebuild_every

    def _train_fresh(self, rows: np.ndarray, rwp: np.ndarray) -> TrainedModel:
        """The surrogate a rebuild swaps in: ``analyze``'s model of the frame (catalogue rows
        ``rows`` fitted to it, Rwp ``rwp``), by the one science step, so the rebuilt frame's
        answer is the offline one (module doc). ``rebuild_search`` "rescore": given the
        serving search, its best points scored again on the frame (``analyze`` given that
        search); "search": the frame's own search (``analyze`` of the frame, bit for bit),
        which then serves, as the preparation's did."""
        if self._rebuild_search == "search":
            trained = steps.train_surrogate(self.catalogue[rows], rwp, self.settings)
            self.search = search_trace(trained.search_history)
            self.member_points = list(self.search)
            return trained
        trained = steps.train_surrogate(
            self.catalogue[rows], rwp, self.settings, search=self.search
        )
        # the rebuilt model's interval members: its points as scored on this frame
        self.member_points = trained.search_history
        return trained

    def _interval_sd(
        self,
        run: LiveModelSettings,
        contrib: AtomContributions,
        idx: np.ndarray,
        rwp: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """SD of each live value and its degrees of freedom: the SHAP-mean sampling error,
        plus the spread of the serving surrogate's ensemble when ``ci_models`` ≥ 2 (the
        offline ensemble of the frame it was built on, see
        :mod:`motex_stream.stream.live.live_intervals`).

        The ensemble's spread is the SD (ddof 1) of ``ci_models`` members' values, as offline,
        so it carries ``ci_models − 1`` degrees of freedom; the interval then takes Student's
        t quantile with the Welch–Satterthwaite degrees of freedom, by the offline intervals'
        own function (:func:`motex_stream.explain.confidence.combined_sd`). The sampling error
        alone counts as exact (normal quantile, ``None``)."""
        se = sampling_error(contrib)
        ens = self._ensemble
        if run.ci_models < 2 or ens is None:
            return se, None
        ens_sd = ens.update(self.surrogate.generation, rwp, idx)
        return combined_sd(ens_sd, len(ens.params), se)

    def _change(
        self,
        frame: Frame,
        run: LiveModelSettings,
        atoms: AtomValues,
        df: np.ndarray | None,
    ) -> KeepSetChange | None:
        """A persistent change of the keep set within the frame's run (one detector per run)."""
        state = self._runs[frame.source]
        if state.detector is None:
            state.detector = KeepSetChangeDetector(persist=run.change_frames, level=run.ci_level)
        detector = state.detector
        change = detector.update(frame.seq, atoms, None if df is None else df.tolist())
        self._save_changes()
        return change

    def _save_changes(self) -> None:
        """Persist every run's change detector (logged, never raised on failure)."""
        live_state.save_changes(self)

    def _describe_once(self, run: str) -> ModelDrawing | None:
        """The model's coordinates on the first frame of each run, else None."""
        state = self._runs[run]
        if state.described:
            return None
        state.described = True
        # symmetry-equivalent sites (1-based atoms), so a view can say "these 12 are one site"
        return structure(self.engine, equivalent=self._sites.equivalent(self._atoms))

    @property
    def _sites(self) -> Sites:
        """The model's sites within the calculator's pair range, as ``analyze`` reports them
        (:meth:`motex_stream.structure.symmetry.Sites.of`), computed once."""
        if self._site_cache is None:
            self._site_cache = Sites.of(self.model, cutoff=self.engine.grid.pair_dmax)
        return self._site_cache

    def from_scratch(self, frame: Frame) -> tuple[np.ndarray, FitResults]:
        """A full offline analysis of one frame (fresh search + model), through the same
        science steps as ``analyze``: the reference the warm-started values are checked
        against. Returns (contribution values, fits)."""
        _, g = self._frame_g(frame)
        fits = steps.fit_masks(self.engine, self.catalogue, g, self.settings.zoom, dask=self.dask)
        trained = steps.train_surrogate(self.catalogue, fits.rwp, self.settings)
        _, values = steps.explain(
            trained, self.catalogue, rows=self.settings.explain_rows, seed=self.settings.seed
        )
        return values.value, fits


def _frame_rounds(requested: int, depth: int) -> int:
    """Rounds per frame: as requested, but no more than the per-frame SHAP budget allows."""
    return max(1, min(requested, rounds_for_budget(depth, FRAME_SHAP_BUDGET)))
