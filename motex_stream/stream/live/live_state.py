"""The live analyzer's saved state: write it as one atomic commit, read it back checked.

Kept apart from :mod:`motex_stream.stream.live.analyzer` so that what is on disk (layout, checks,
recovery from a bad state) can be reasoned about, and changed, without touching the per-frame
science. A state folder holds ``state.json`` (the commit record), one generation folder
``gNNNNNN/`` (catalogue, fit grid, surrogate) named by it, and ``changes.json`` (the change
detectors, written after every frame).
"""

from __future__ import annotations

import contextlib
import hashlib
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

from motex_stream.analysis.settings import LiveModelSettings
from motex_stream.catalogue import Catalogue
from motex_stream.model.features import features
from motex_stream.model.incremental import IncrementalSurrogate
from motex_stream.pdf.batched import PreparedModel
from motex_stream.stream.journal import fsync_dir, write_atomic
from motex_stream.stream.live.changes import KeepSetChangeDetector
from motex_stream.stream.live.runs import LiveRuns
from motex_stream.structure.starting_model import StartingModel

log = logging.getLogger(__name__)

#: 3: generation folders committed by state.json; 4: with each file's SHA-256 and the
#: previous commit (read: 3 and 4; a version-3 state is used unverified, once, with a warning)
STATE_VERSION = 4
_READABLE_VERSIONS = (3, STATE_VERSION)
_GENERATION = re.compile(r"g\d{6}")

#: The change detectors' state in the state folder, written after every frame (small JSON).
CHANGES_FILE = "changes.json"


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
    state_dir: Path | None
    save_every: int | None
    save_interval: float | None
    state_save_failures: int
    state_load_fallbacks: int
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
class SavedState:
    """What one committed generation holds, every part checked, ready to build an analyzer."""

    resolved: LiveModelSettings  # the configured settings with the saved Q range
    masks: np.ndarray
    r: np.ndarray
    surrogate: IncrementalSurrogate
    search: list[dict[str, Any]]
    frames: int
    generation: int
    record: dict[str, Any]  # its commit record (state.json, or the previous commit in it)


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
        "frames": analyzer._frames,
        "saved_at": time.time(),
    }
    if previous is not None:
        meta["previous"] = {k: v for k, v in previous.items() if k != "previous"}
    write_atomic(d / "state.json", json.dumps(meta, indent=1).encode())
    analyzer._state_record = meta
    analyzer._saved_frames = analyzer._frames
    analyzer._saved_mono = time.monotonic()
    return [name] if previous is None else [name, str(previous["generation"])]


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
            analyzer = build(read_generation(settings, model, directory, meta))
        except StateMismatchError:
            raise
        except Exception as exc:
            previous = meta.get("previous")
            if not isinstance(previous, dict):
                raise
            _check_record(previous, settings)
            analyzer = build(read_generation(settings, model, directory, previous))
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
    analyzer.state_load_fallbacks = fallbacks
    analyzer._state_record = record
    keep = [generation_name(analyzer._generation)]
    if fallbacks == 0 and isinstance(meta.get("previous"), dict):
        keep.append(str(meta["previous"].get("generation")))
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
    return SavedState(
        resolved=resolved,
        masks=masks,
        r=r,
        surrogate=surrogate,
        search=search,
        frames=frames,
        generation=int(name[1:]),
        record=meta,
    )


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
