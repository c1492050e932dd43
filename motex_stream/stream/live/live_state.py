"""The live analyzer's saved state: write it as one atomic commit, read it back checked.

Kept apart from :mod:`motex_stream.stream.live.analyzer` so that what is on disk (layout, checks,
recovery from a bad state) can be reasoned about, and changed, without touching the per-frame
science. A state folder holds ``state.json`` (the commit record), one generation folder
``gNNNNNN/`` (catalogue, fit grid, surrogate, and what a warm restart would otherwise
recompute: the SHAP matrix of the serving trees and the interval ensemble) named by it,
``changes.json`` (the change detectors, written after every frame) and the engine's class
kernel tables (``engine-<key>.npy``, written once, named by everything they depend on).

Why save what could be recomputed (issue 23): a warm restart recomputed the engine tables
(~2 s), the SHAP of every serving tree (~0.6 s) and, on its first frame, the interval
ensemble (~2 s: four trainings) before it answered, and the recomputed SHAP sum and ensemble
(built on another frame) made its answers differ from those the saved analyzer would have
given. Loaded, they are the very arrays the saved analyzer held, so a restarted service
answers every later frame bit for bit as if it had never stopped. Every file is ``.npz`` /
``.npy`` / JSON / xgboost UBJ read without pickle, and checked by its SHA-256.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import logging
import math
import os
import re
import shutil
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np

import motex_stream
from motex_stream.analysis import steps
from motex_stream.analysis.jsonable import to_jsonable
from motex_stream.analysis.settings import LiveModelSettings
from motex_stream.catalogue import Catalogue
from motex_stream.explain.contributions import ShapCache
from motex_stream.model.features import features
from motex_stream.model.incremental import IncrementalSurrogate
from motex_stream.pdf.batched import PreparedModel, default_zoom_grid
from motex_stream.stream.journal import fsync_dir, write_atomic
from motex_stream.stream.live.changes import KeepSetChangeDetector
from motex_stream.stream.live.live_intervals import LiveEnsemble, member_params
from motex_stream.stream.live.runs import LiveRuns
from motex_stream.structure.starting_model import StartingModel

log = logging.getLogger(__name__)

#: 3: generation folders committed by state.json; 4: with each file's SHA-256 and the
#: previous commit; 5: with the SHAP matrix, the interval ensemble and the engine tables (read:
#: 3 to 5; a version-3 state is used unverified, once, with a warning; 3 and 4 compute what
#: they lack, once, with a log line, and the next commit saves it)
STATE_VERSION = 5
_READABLE_VERSIONS = (3, 4, STATE_VERSION)
_GENERATION = re.compile(r"g\d{6}")
_DIGEST = re.compile(r"[0-9a-f]{64}")

#: The change detectors' state in the state folder, written after every frame (small JSON).
CHANGES_FILE = "changes.json"
#: In a generation: the SHAP matrix of the serving trees on the explained motifs.
EXPLAIN_FILE = "explain.npz"
#: In a generation: the interval ensemble's member values (``ci_models`` ≥ 2, once built).
ENSEMBLE_FILE = "ensemble.npz"
#: A SHAP matrix larger than this is not saved (recomputed on a restart instead): a save runs
#: between two frames, and writing, fsyncing and hashing ~64 MB would delay the next one more
#: than the restart's one full SHAP pass costs. 10^4 motifs × 25 features: 2 MB.
MAX_SAVED_SHAP_BYTES = 64 << 20


class Persistent(Protocol):
    """What of an analyzer is saved and loaded here, and the bookkeeping of its saves.

    The analyzer (:class:`~motex_stream.stream.live.analyzer.MotexFrameAnalyzer`) imports this
    module, so this module names only the members it reads and writes, never the class.
    """

    name: str
    settings: LiveModelSettings  # resolved (the Q range of the reference data)
    configured: LiveModelSettings  # as configured: its fingerprint decides reuse
    engine: PreparedModel
    catalogue: np.ndarray
    surrogate: IncrementalSurrogate
    search: list[dict[str, Any]]
    preparation: str  # preparation_digest, fixed when the model was prepared
    state_dir: Path | None
    save_every: int | None
    save_interval: float | None
    state_save_failures: int
    state_load_fallbacks: int
    _shap: ShapCache
    _explained: np.ndarray | None
    _ensemble: LiveEnsemble | None
    _frames: int
    _generation: int
    _saved_frames: int
    _saved_mono: float
    _state_record: dict[str, Any] | None
    _runs: LiveRuns


_A = TypeVar("_A", bound=Persistent)


class StateError(ValueError):
    """A saved state that cannot be used as it is (corrupt, incomplete, out of range)."""


class StateMismatchError(StateError):
    """A saved state prepared with other settings or by another version."""


@dataclass
class SavedShap:
    """The SHAP matrix a saved analyzer held (features × explained motifs) and what it explains."""

    values_t: np.ndarray
    expected_value: float
    n_trees: int
    generation: int
    explained: np.ndarray | None  # the explained subsample's rows; None: every motif

    def restore(
        self, cache: ShapCache, surrogate: IncrementalSurrogate, explained: np.ndarray | None
    ) -> bool:
        """Put the saved matrix into ``cache`` when it explains ``surrogate``'s trees on the
        rows ``explained``; False (logged) when it does not (the caller explains anew)."""
        why = ""
        if (self.n_trees, self.generation) != (surrogate.n_trees, surrogate.generation):
            why = f"saved for {self.n_trees} trees of generation {self.generation}"
        elif (self.explained is None) != (explained is None) or (
            explained is not None and not np.array_equal(self.explained, explained)
        ):
            why = "saved for another subsample of motifs (explain_rows changed)"
        else:
            try:
                cache.restore(self.values_t, self.expected_value, self.n_trees, self.generation)
                return True
            except ValueError as exc:
                why = str(exc)
        log.info("saved SHAP matrix not used (%s): the serving trees are explained anew", why)
        return False


@dataclass
class SavedEnsemble:
    """The interval ensemble a saved analyzer held: its members' values on the frame it was
    built on (see :mod:`motex_stream.stream.live.live_intervals`)."""

    values: np.ndarray  # (members, atoms)
    generation: int
    rows: int
    seed: int
    params: list[dict[str, Any]]

    def live(self, masks: np.ndarray, surrogate: IncrementalSurrogate) -> LiveEnsemble | None:
        """The ensemble again, when it serves ``surrogate``'s generation, with the members it
        was built with (a rebuilt generation's are its re-scored points, which the analyzer
        takes up as its member points); None: the next frame builds it."""
        if self.generation != surrogate.generation:
            return None
        params = member_params(self.params, surrogate.params, len(self.params))
        ensemble = LiveEnsemble(masks, params, self.rows, self.seed)
        ensemble.values, ensemble.generation = self.values, self.generation
        if hasattr(ensemble, "sd"):  # its cached SD: the same expression as LiveEnsemble.update
            ensemble.sd = np.std(self.values, axis=0, ddof=1)
        return ensemble


@dataclass
class SavedState:
    """What one committed generation holds, every part checked, ready to build an analyzer."""

    resolved: LiveModelSettings  # the configured settings with the saved Q range
    masks: np.ndarray
    r: np.ndarray
    surrogate: IncrementalSurrogate
    search: list[dict[str, Any]]
    preparation: str  # preparation_digest of the prepared model (kept across rebuilds)
    frames: int
    generation: int
    record: dict[str, Any]  # its commit record (state.json, or the previous commit in it)
    #: the engine's class kernels (None: not saved, or not for this engine: computed)
    kernels: np.ndarray | None = None
    shap: SavedShap | None = None
    ensemble: SavedEnsemble | None = None


def prepared_engine(model: StartingModel, saved: SavedState) -> PreparedModel:
    """The engine of a saved state: from its saved class kernels when they fit the model,
    else computed (logged, with the time it took), as a fresh preparation does."""
    if saved.kernels is not None:
        try:
            return steps.prepare_engine(model, saved.resolved, saved.r, class_kernels=saved.kernels)
        except ValueError as exc:
            log.warning("model %s: saved engine tables unusable (%s)", saved.resolved.name, exc)
    t = time.perf_counter()
    engine = steps.prepare_engine(model, saved.resolved, saved.r)
    log.info(
        "model %s: engine tables computed in %.1f s (saved with the next commit)",
        saved.resolved.name,
        time.perf_counter() - t,
    )
    return engine


def engine_code_files() -> list[Path]:
    """The engine's source and data files (``motex_stream/pdf``: ``*.py`` and ``data/``), in a
    fixed order. Not its ``__pycache__``: numba writes its compiled-kernel caches there on
    first use, which would change the digest between the save and the next start."""
    root = Path(motex_stream.__file__).parent / "pdf"
    files = [*root.glob("*.py"), *(p for p in (root / "data").rglob("*") if p.is_file())]
    return sorted(files)


@functools.cache
def _engine_code_digest() -> str:
    """SHA-256 of the engine's code and data (:func:`engine_code_files`) and the package
    version: tables made by other engine code are never used (an upgrade computes them once)."""
    root = Path(motex_stream.__file__).parent
    h = hashlib.sha256(motex_stream.__version__.encode())
    for path in engine_code_files():
        h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def engine_tables_name(resolved: LiveModelSettings, r: np.ndarray, zooms: np.ndarray) -> str:
    """The file name of the class kernels of a model: a digest of all they depend on (the
    settings that shape a prepared model and the starting model's bytes, through the
    fingerprint; the fit grid; the zoom grid; the engine's code)."""
    h = hashlib.sha256(resolved.fingerprint().encode())
    h.update(np.ascontiguousarray(r, dtype="<f8").tobytes())
    h.update(np.ascontiguousarray(zooms, dtype="<f8").tobytes())
    h.update(_engine_code_digest().encode())
    return f"engine-{h.hexdigest()[:16]}.npy"


def preparation_digest(
    configured: LiveModelSettings,
    catalogue: np.ndarray,
    fit_r: np.ndarray,
    search: list[dict[str, Any]],
    hyperparameters: dict[str, Any],
) -> str:
    """What a prepared model is, hashed: the configured settings' fingerprint (which covers
    the starting model's bytes), the catalogue, the fit grid, and the preparation's search
    and chosen hyperparameters (which depend on the reference data).

    Computed once, when the model is prepared, and saved with the state: a rebuild replaces
    the serving search and hyperparameters, but the model is still the one prepared, so a
    restarted service gives a run the analysis identity (and derived run) it had before.
    """
    h = hashlib.sha256(configured.fingerprint().encode())
    h.update(np.ascontiguousarray(catalogue, dtype=np.uint8).tobytes())
    h.update(np.ascontiguousarray(fit_r, dtype="<f8").tobytes())
    prepared = {"search": search, "hyperparameters": hyperparameters}
    h.update(json.dumps(to_jsonable(prepared), sort_keys=True).encode())
    return h.hexdigest()


def generation_name(generation: int) -> str:
    """The folder name of a generation number (``g000042``)."""
    return f"g{generation:06d}"


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


def _remove_leftovers(directory: Path, keep: Collection[str]) -> None:
    """Delete what an interrupted save (or the previous state layout) left behind."""
    for path in directory.iterdir():
        if path.name in ("state.json", CHANGES_FILE) or path.name in keep:
            continue
        log.info("removing leftover %s", path)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _aside_target(base: Path) -> Path:
    """A free ``<base>.bad-<time>[-n]`` path beside ``base``."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = base.with_name(f"{base.name}.bad-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = base.with_name(f"{base.name}.bad-{stamp}-{n}")
    return target


def _move_aside(directory: Path, why: str) -> None:
    """Keep unusable state for inspection, out of the way of a fresh preparation."""
    target = _aside_target(directory)
    os.replace(directory, target)
    log.error("state in %s unusable (%s); moved to %s, preparing anew", directory, why, target)


def _set_generation_aside(directory: Path, name: str) -> Path | None:
    """Move a refused generation folder out of the state folder (``<dir>.<gen>.bad-<time>``),
    kept for inspection; the next save's clean-up would otherwise delete it."""
    gen = directory / name
    if not gen.exists():
        return None
    target = _aside_target(directory.with_name(f"{directory.name}.{name}"))
    try:
        os.replace(gen, target)
    except OSError:
        return None
    return target


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _digests(gen: Path) -> dict[str, str]:
    """SHA-256 of every file of a generation folder, by its path inside the folder."""
    return {
        p.relative_to(gen).as_posix(): _sha256(p) for p in sorted(gen.rglob("*")) if p.is_file()
    }


def _verify(gen: Path, record: dict[str, Any]) -> None:
    """The generation folder holds exactly the files its commit recorded, byte for byte.

    Every other check accepts a valid file of another model (a booster with the same number
    of features, say); only the recorded digest tells it was not the one written.
    """
    files = record.get("files")
    if files is None and record.get("version") == 3:
        log.warning("state %s was saved without checksums (version 3); used unverified", gen)
        return
    if not isinstance(files, dict) or not files:
        raise StateError(f"no checksums recorded for {gen.name}")
    found = _digests(gen)
    if found.keys() != files.keys():
        missing, extra = sorted(files.keys() - found), sorted(found.keys() - files)
        raise StateError(f"checksum list of {gen.name}: missing {missing}, unexpected {extra}")
    changed = sorted(k for k, digest in found.items() if files[k] != digest)
    if changed:
        raise StateError(f"checksum mismatch in {gen.name}: {', '.join(changed)}")


# --------------------------------------------------------------------------- writing
def save_state(analyzer: Persistent) -> bool:
    """Persist everything a restart needs, as one atomic commit; True when it committed.

    A save that fails (a full disk, a read-only mount, xgboost's writer raising its own
    ``XGBoostError`` rather than an ``OSError``) is logged in one line, counted in
    ``analyzer.state_save_failures`` and its partial generation removed; it never raises. A
    service must keep analysing and exit cleanly on a full disk: the previous commit is still
    there to restart from, and the partial folders of failed saves would otherwise pile up on
    the very disk that is full.
    """
    if analyzer.state_dir is None:
        return False
    before = analyzer._generation
    try:
        keep = _commit(analyzer)
    except Exception as exc:  # any writer's failure: the frame and the exit must not see it
        analyzer.state_save_failures += 1
        if analyzer._generation != before:  # its folder was started: remove what is there
            gen = analyzer.state_dir / generation_name(analyzer._generation)
            shutil.rmtree(gen, ignore_errors=True)
            analyzer._generation = before  # and its name is free again
        _unlink_quietly(analyzer.state_dir / "state.json.tmp")
        log.error(
            "model %s: cannot save state in %s (%d failed so far; the last good save stays): %s",
            analyzer.name,
            analyzer.state_dir,
            analyzer.state_save_failures,
            _one_line(exc),
        )
        return False
    try:  # after the commit: a failure here must not undo it, the next save tries again
        _remove_leftovers(analyzer.state_dir, keep=keep)
    except OSError as exc:
        log.warning(
            "model %s: leftovers in %s stay for now: %s", analyzer.name, analyzer.state_dir, exc
        )
    return True


def _commit(analyzer: Persistent) -> list[str]:
    """Write a fresh generation folder, each file fsync'ed, then replace ``state.json``,
    which names that folder, atomically (write, fsync, rename). A kill at any point leaves
    the previous commit intact; the leftovers of an interrupted save are removed on the next
    load or save. Returns the generation folders the commit uses (new, previous)."""
    assert analyzer.state_dir is not None
    d = analyzer.state_dir
    d.mkdir(parents=True, exist_ok=True)
    analyzer._generation += 1
    name = generation_name(analyzer._generation)
    gen = d / name
    if gen.exists():
        shutil.rmtree(gen)
    gen.mkdir()
    Catalogue(analyzer.catalogue, analyzer.settings.generator, analyzer.settings.seed).save(
        gen / "catalogue.npz"
    )
    np.savez(gen / "grid.npz", r=analyzer.engine.r_data)
    analyzer.surrogate.save(gen / "surrogate")
    _save_shap(gen, analyzer)
    _save_ensemble(gen, analyzer)
    tables = _save_engine_tables(d, analyzer)
    for path in sorted(gen.rglob("*"), reverse=True):
        _fsync_path(path)
    fsync_dir(gen)
    # the commit in use (loaded or last saved) stays beside the new one: a generation that
    # fails its checksums later on falls back to it instead of to a fresh preparation
    previous = analyzer._state_record
    if previous is not None and (
        previous.get("generation") == name or not (d / str(previous.get("generation"))).is_dir()
    ):
        previous = None
    meta = {
        "version": STATE_VERSION,
        "fingerprint": analyzer.configured.fingerprint(),
        "generation": name,
        "files": _digests(gen),
        "settings": analyzer.settings.model_dump(mode="json"),
        "hyperparameters": analyzer.surrogate.params.to_dict(),
        "search": analyzer.search,
        "preparation": analyzer.preparation,
        "frames": analyzer._frames,
        "engine": tables,
        "saved_at": time.time(),
    }
    if previous is not None:
        meta["previous"] = {k: v for k, v in previous.items() if k != "previous"}
    write_atomic(d / "state.json", json.dumps(meta, indent=1).encode())
    analyzer._state_record = meta
    analyzer._saved_frames = analyzer._frames
    analyzer._saved_mono = time.monotonic()
    return _in_use(meta)


def _in_use(record: dict[str, Any]) -> list[str]:
    """The files of the state folder a commit record uses: its generation and engine tables,
    and those of the previous commit it keeps."""
    used = []
    for r in (record, record.get("previous")):
        if isinstance(r, dict):
            used.append(str(r.get("generation")))
            engine = r.get("engine")
            if isinstance(engine, dict):
                used.append(str(engine.get("file")))
    return used


def _save_shap(gen: Path, analyzer: Persistent) -> None:
    """The SHAP matrix of the serving trees, when it explains all of them (it does after
    every frame and at preparation) and is small enough to save (:data:`MAX_SAVED_SHAP_BYTES`)."""
    cache, s = analyzer._shap, analyzer.surrogate
    values = cache.values
    if values is None or (cache.n_trees, cache.generation) != (s.n_trees, s.generation):
        return
    if values.nbytes > MAX_SAVED_SHAP_BYTES:
        return
    explained = analyzer._explained
    np.savez(
        gen / EXPLAIN_FILE,
        values_t=values.T,
        expected_value=np.float64(cache.expected_value),
        n_trees=np.int64(cache.n_trees),
        generation=np.int64(s.generation),
        subsample=np.bool_(explained is not None),
        explained=np.asarray([] if explained is None else explained, dtype=np.int64),
    )


def _save_ensemble(gen: Path, analyzer: Persistent) -> None:
    """The interval ensemble, when it serves the current surrogate generation."""
    ens = analyzer._ensemble
    if ens is None or ens.values is None or ens.generation != analyzer.surrogate.generation:
        return
    np.savez(
        gen / ENSEMBLE_FILE,
        values=np.asarray(ens.values, dtype=np.float64),
        generation=np.int64(ens.generation),
        rows=np.int64(ens.rows),
        seed=np.int64(ens.seed),
        params=np.array(json.dumps([p.to_dict() for p in ens.params])),
    )


def _save_engine_tables(d: Path, analyzer: Persistent) -> dict[str, str]:
    """The engine's class kernels beside the generations, written once per engine (they do not
    change from frame to frame: ~20 MB for 109725); their record for the commit."""
    engine = analyzer.engine
    name = engine_tables_name(analyzer.settings, engine.r_data, engine.zooms)
    used = (analyzer._state_record or {}).get("engine")
    if isinstance(used, dict) and used.get("file") == name and (d / name).is_file():
        return {"file": name, "sha256": str(used.get("sha256"))}
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(engine.class_kernels), allow_pickle=False)
    data = buffer.getvalue()
    write_atomic(d / name, data)
    return {"file": name, "sha256": hashlib.sha256(data).hexdigest()}


def _one_line(exc: BaseException) -> str:
    """The exception's type and first line: xgboost's errors carry a C++ stack trace, which
    would turn one log line into twenty."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"


def _unlink_quietly(path: Path) -> None:
    """Remove ``path`` if it is there; a cleanup that fails is not worth another error."""
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)


def maybe_save(analyzer: Persistent) -> None:
    """Save after ``save_every`` frames or ``save_interval`` s with new frames, whichever
    comes first; a failure is logged and counted, never raised (the frame is still
    published)."""
    new = analyzer._frames - analyzer._saved_frames
    by_count = analyzer.save_every is not None and new >= analyzer.save_every
    by_time = (
        analyzer.save_interval is not None
        and new > 0
        and time.monotonic() - analyzer._saved_mono >= analyzer.save_interval
    )
    if not (by_count or by_time):
        return
    if not save_state(analyzer):
        # try again after another save_every frames (or save_interval s)
        analyzer._saved_frames = analyzer._frames
        analyzer._saved_mono = time.monotonic()


def save_changes(analyzer: Persistent) -> None:
    """Persist every run's change detector, so a change in progress survives a restart;
    a failure is logged, never raised (the frame is still published)."""
    if analyzer.state_dir is None:
        return
    data = {run: det.state() for run, det in analyzer._runs.detectors().items()}
    try:
        analyzer.state_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(analyzer.state_dir / CHANGES_FILE, json.dumps(data).encode())
    except OSError as exc:
        _unlink_quietly(analyzer.state_dir / (CHANGES_FILE + ".tmp"))
        log.error("model %s: cannot save change detection state: %s", analyzer.name, exc)


# --------------------------------------------------------------------------- reading
def load(
    settings: LiveModelSettings,
    model: StartingModel,
    directory: Path,
    build: Callable[[SavedState], _A],
) -> _A | None:
    """The analyzer saved in ``directory``, or None (nothing there, or nothing usable).

    Every file is checked before use (its checksum, versions, shapes, ranges, the grid);
    ``build`` turns the checked parts into an analyzer. When the last commit's generation
    fails a check, the previous commit's is used (logged, counted in
    ``state_load_fallbacks``; the refused folder is kept aside). State that does not match
    the settings, or of which neither generation is usable, is logged in one line and moved
    aside to ``<directory>.bad-<time>`` for inspection, so the caller prepares anew; the
    service never crash-loops on its own state.
    """
    if not directory.exists() and not directory.is_symlink():
        return None
    fallbacks = 0
    try:
        if not directory.is_dir():
            raise StateError("the state path is not a folder")
        if not (directory / "state.json").exists():
            if any(directory.iterdir()):
                raise StateError("files but no state.json (an interrupted first save)")
            return None
        meta = read_meta(settings, directory)
        record = meta
        try:
            saved = read_generation(settings, model, directory, meta)
            analyzer = build(saved)
        except StateMismatchError:
            raise
        except Exception as exc:
            previous = meta.get("previous")
            if not isinstance(previous, dict):
                raise
            _check_record(previous, settings)
            saved = read_generation(settings, model, directory, previous)
            analyzer = build(saved)
            record, fallbacks = previous, 1
            bad, good = str(meta.get("generation")), str(previous.get("generation"))
            aside = _set_generation_aside(directory, bad)
            log.warning(
                "model %s: saved generation %s unusable (%s); using the previous one, %s "
                "(%d frames); the refused one is in %s",
                settings.name,
                bad,
                _one_line(exc),
                good,
                analyzer._frames,
                aside,
            )
    except StateMismatchError as exc:
        _move_aside(directory, f"state was prepared with other settings ({exc})")
        return None
    except Exception as exc:  # corrupt state of any kind: never fatal
        _move_aside(directory, _one_line(exc))
        return None
    if saved.ensemble is not None:
        analyzer._ensemble = saved.ensemble.live(analyzer.catalogue, saved.surrogate)
        if analyzer._ensemble is not None:
            analyzer.member_points = list(saved.ensemble.params)
    analyzer.state_load_fallbacks = fallbacks
    analyzer._state_record = record
    keep = _in_use(meta if fallbacks == 0 else record)
    _remove_leftovers(directory, keep=keep)
    analyzer._runs.restore(read_changes(directory / CHANGES_FILE))
    log.info(
        "reloaded model %s from %s (%d frames so far)",
        settings.name,
        directory,
        analyzer._frames,
    )
    return analyzer


def read_meta(settings: LiveModelSettings, directory: Path) -> dict[str, Any]:
    """``state.json``: a commit record whose version and fingerprint match ``settings``."""
    meta = json.loads((directory / "state.json").read_text())
    if not isinstance(meta, dict):
        raise StateError(f"state.json holds a {type(meta).__name__}, not a mapping")
    _check_record(meta, settings)
    return meta


def _check_record(record: dict[str, Any], settings: LiveModelSettings) -> None:
    if record.get("version") not in _READABLE_VERSIONS:
        raise StateMismatchError(f"state version {record.get('version')!r} != {STATE_VERSION}")
    if record.get("fingerprint") != settings.fingerprint():
        raise StateMismatchError("fingerprint differs")


def read_generation(
    settings: LiveModelSettings, model: StartingModel, directory: Path, meta: dict[str, Any]
) -> SavedState:
    """The generation a commit record names, its checksums verified and every part checked;
    raises :class:`StateError` (or whatever a corrupt file raises) when it cannot be used."""
    name = meta.get("generation")
    if not isinstance(name, str) or not _GENERATION.fullmatch(name):
        raise StateError(f"generation {name!r} is not a generation folder name")
    gen = directory / name
    _verify(gen, meta)
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
    preparation = meta.get("preparation")
    if preparation is not None and not (
        isinstance(preparation, str) and _DIGEST.fullmatch(preparation)
    ):
        raise StateError(f"preparation {preparation!r} is not a SHA-256 digest")

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
    if preparation is None:  # saved before the digest was (a state that may have rebuilt)
        preparation = preparation_digest(settings, masks, r, search, surrogate.params.to_dict())
    if meta.get("version") != STATE_VERSION:
        log.info(
            "model %s: state of version %s holds no engine tables, SHAP matrix or interval "
            "ensemble (version %d does): computed now, saved with the next commit",
            settings.name,
            meta.get("version"),
            STATE_VERSION,
        )
    return SavedState(
        resolved=resolved,
        masks=masks,
        r=r,
        surrogate=surrogate,
        search=search,
        preparation=preparation,
        frames=frames,
        generation=int(name[1:]),
        record=meta,
        kernels=_read_engine_tables(directory, meta, resolved, r),
        shap=_read_shap(gen / EXPLAIN_FILE),
        ensemble=_read_ensemble(gen / ENSEMBLE_FILE, n_atoms),
    )


def _read_shap(path: Path) -> SavedShap | None:
    """The saved SHAP matrix (None: none saved). Its checksum was verified with the
    generation; a file of the wrong form raises (the generation is then not used)."""
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as f:
        values_t = np.asarray(f["values_t"], dtype=np.float64)
        explained = np.asarray(f["explained"], dtype=np.int64) if bool(f["subsample"]) else None
        shap = SavedShap(
            values_t=values_t,
            expected_value=float(f["expected_value"]),
            n_trees=int(f["n_trees"]),
            generation=int(f["generation"]),
            explained=explained,
        )
    if values_t.ndim != 2 or not np.all(np.isfinite(values_t)):
        raise StateError(f"SHAP matrix of shape {values_t.shape} or not finite")
    return shap


def _read_ensemble(path: Path, n_atoms: int) -> SavedEnsemble | None:
    """The saved interval ensemble (None: none saved); see :func:`_read_shap`."""
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as f:
        ensemble = SavedEnsemble(
            values=np.asarray(f["values"], dtype=np.float64),
            generation=int(f["generation"]),
            rows=int(f["rows"]),
            seed=int(f["seed"]),
            params=json.loads(str(f["params"])),
        )
    if ensemble.values.ndim != 2 or ensemble.values.shape != (len(ensemble.params), n_atoms):
        raise StateError(f"ensemble values of shape {ensemble.values.shape}")
    return ensemble


def _read_engine_tables(
    directory: Path, record: dict[str, Any], resolved: LiveModelSettings, r: np.ndarray
) -> np.ndarray | None:
    """The class kernels a commit names, when they were made for this model, grid and engine
    code and their checksum holds; else None, logged (they are computed, as a fresh
    preparation does). A file that fails its checksum is removed (the next commit rewrites
    it): unlike a generation, nothing else depends on it."""
    entry = record.get("engine")
    if not isinstance(entry, dict):
        return None
    name = engine_tables_name(resolved, r, default_zoom_grid())
    if entry.get("file") != name:
        log.info(
            "model %s: saved engine tables are for another engine or grid (%s, now %s): "
            "computing them",
            resolved.name,
            entry.get("file"),
            name,
        )
        return None
    path = directory / name
    try:
        if _sha256(path) != entry.get("sha256"):
            log.warning("model %s: engine tables %s fail their checksum", resolved.name, path)
            _unlink_quietly(path)
            return None
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        log.warning("model %s: engine tables %s unreadable: %s", resolved.name, path, exc)
        return None


def read_changes(path: Path) -> dict[str, KeepSetChangeDetector]:
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
