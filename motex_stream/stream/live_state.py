"""The live analyzer's saved state: write it as one atomic commit, read it back checked.

Kept apart from :mod:`motex_stream.stream.analyzer` so that what is on disk (layout, checks,
recovery from a bad state) can be reasoned about, and changed, without touching the per-frame
science. A state folder holds ``state.json`` (the commit record), one generation folder
``gNNNNNN/`` (catalogue, fit grid, surrogate) named by it, and ``changes.json`` (the change
detectors, written after every frame).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from motex_stream.analysis.settings import LiveModelSettings
from motex_stream.catalogue import Catalogue
from motex_stream.model.gbdt import IncrementalSurrogate, features
from motex_stream.stream.changes import KeepSetChangeDetector
from motex_stream.stream.journal import fsync_dir, write_atomic
from motex_stream.structure.starting_model import StartingModel

if TYPE_CHECKING:  # the analyzer imports this module; only its type is needed here
    from motex_stream.stream.analyzer import MotexFrameAnalyzer

log = logging.getLogger(__name__)

STATE_VERSION = 3  # 3: generation folders committed by state.json
_GENERATION = re.compile(r"g\d{6}")

#: The change detectors' state in the state folder, written after every frame (small JSON).
CHANGES_FILE = "changes.json"


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


# --------------------------------------------------------------------------- writing
def save_state(analyzer: MotexFrameAnalyzer) -> bool:
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
        _commit(analyzer)
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
    return True


def _commit(analyzer: MotexFrameAnalyzer) -> None:
    """Write a fresh generation folder, each file fsync'ed, then replace ``state.json``,
    which names that folder, atomically (write, fsync, rename). A kill at any point leaves
    the previous commit intact; the leftovers of an interrupted save are removed on the next
    load or save."""
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
    meta = {
        "version": STATE_VERSION,
        "fingerprint": analyzer.configured.fingerprint(),
        "generation": name,
        "settings": analyzer.settings.model_dump(mode="json"),
        "hyperparameters": analyzer.surrogate.params.to_dict(),
        "search": analyzer.search,
        "frames": analyzer._frames,
        "saved_at": time.time(),
    }
    write_atomic(d / "state.json", json.dumps(meta, indent=1).encode())
    analyzer._saved_frames = analyzer._frames
    analyzer._saved_mono = time.monotonic()
    _remove_leftovers(d, keep=name)


def _one_line(exc: BaseException) -> str:
    """The exception's type and first line: xgboost's errors carry a C++ stack trace, which
    would turn one log line into twenty."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"


def _unlink_quietly(path: Path) -> None:
    """Remove ``path`` if it is there; a cleanup that fails is not worth another error."""
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)


def maybe_save(analyzer: MotexFrameAnalyzer) -> None:
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


def save_changes(analyzer: MotexFrameAnalyzer) -> None:
    """Persist every run's change detector, so a change in progress survives a restart;
    a failure is logged, never raised (the frame is still published)."""
    if analyzer.state_dir is None:
        return
    data = {run: det.state() for run, det in analyzer._changes.items()}
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
    build: Callable[[SavedState], MotexFrameAnalyzer],
) -> MotexFrameAnalyzer | None:
    """The analyzer saved in ``directory``, or None (nothing there, or nothing usable).

    Every file is checked before use (versions, shapes, ranges, the grid); ``build`` turns
    the checked parts into an analyzer. State that does not match the settings or fails a
    check (or that ``build`` cannot use) is logged in one line and moved aside to
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
        analyzer = build(read_state(settings, model, directory))
    except StateMismatchError as exc:
        _move_aside(directory, f"state was prepared with other settings ({exc})")
        return None
    except Exception as exc:  # corrupt state of any kind: never fatal
        _move_aside(directory, f"{type(exc).__name__}: {exc}")
        return None
    _remove_leftovers(directory, keep=generation_name(analyzer._generation))
    analyzer._changes = read_changes(directory / CHANGES_FILE)
    log.info(
        "reloaded model %s from %s (%d frames so far)",
        settings.name,
        directory,
        analyzer._frames,
    )
    return analyzer


def read_state(settings: LiveModelSettings, model: StartingModel, directory: Path) -> SavedState:
    """The committed generation of ``directory``, every part checked; raises
    :class:`StateError` (or whatever a corrupt file raises) when it cannot be used."""
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
    return SavedState(
        resolved=resolved,
        masks=masks,
        r=r,
        surrogate=surrogate,
        search=search,
        frames=frames,
        generation=int(name[1:]),
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
