"""Live settings and a prepared state for the two-motif series, shared by the live tests.

Every live test that runs the analyzer on :func:`motex_stream.stream.sim.series.two_motif_series`
prepares on frame 1 (pure motif A, as every such series starts) with settings that differ only
in size; one definition keeps them from drifting apart.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from motex_stream.analysis.settings import LiveModelSettings
from motex_stream.stream.frames import Frame
from motex_stream.stream.live.analyzer import MotexFrameAnalyzer
from motex_stream.stream.sim.series import TwoMotifSeries, two_motif_series


def live_settings(series: TwoMotifSeries, **changes: Any) -> LiveModelSettings:
    """A small live model of the series (2,000 motifs, a 6-point search), with ``changes``."""
    values: dict[str, Any] = {
        "name": "two-motifs",
        "starting_model": str(series.model_path),
        "catalogue_size": 2000,
        "refit": 2000,
        "rounds": 10,
        "max_trees": 150,
        "search_calls": 6,
    }
    return LiveModelSettings(**{**values, **changes})


def small_settings(series: TwoMotifSeries, **changes: Any) -> LiveModelSettings:
    """The smallest model the saved-state tests need (300 motifs, 3 search calls): they test
    what happens to a state on disk, not what it finds."""
    small = {"catalogue_size": 300, "refit": 300, "rounds": 5, "max_trees": 60, "search_calls": 3}
    return live_settings(series, **{**small, **changes})


#: the crossover series of the change-detection tests: 30 frames, motif B's share passes 0.5
#: between seq 15 and 16 (0-based frame 14.5), Gaussian noise 1 % of max |G| per point
N_CROSS = 30
CROSSOVER = 14.5
CROSS_NOISE = 0.01


def crossing_series(directory: Path) -> TwoMotifSeries:
    """The change-detection series (:data:`N_CROSS`, :data:`CROSSOVER`, :data:`CROSS_NOISE`)."""
    return two_motif_series(directory, n_frames=N_CROSS, noise=CROSS_NOISE, crossover=CROSSOVER)


def prepare_on_first_frame(
    settings: LiveModelSettings, series: TwoMotifSeries, directory: Path
) -> Path:
    """Prepare (catalogue fit + search) on frame 1 and persist into ``directory``."""
    MotexFrameAnalyzer.prepare(
        settings, Frame("reference", 1, 0.0, series.r, series.frame(0)), directory
    )
    return directory


@dataclass(frozen=True)
class PreparedState:
    """A model prepared once on frame 1 of ``series`` with ``settings``, saved in ``directory``.

    Made once per session (pytest scope) and shared by several modules, so ``directory`` is
    never handed to code that may write: every test works on its own copy
    (:meth:`copy`, :meth:`analyzer`). :func:`shared_state` checks at the end of the session
    that the folder is byte for byte what the preparation wrote.
    """

    series: TwoMotifSeries
    settings: LiveModelSettings
    directory: Path

    def copy(self, to: Path) -> Path:
        """A private copy of the saved state at ``to`` (which must not exist yet)."""
        shutil.copytree(self.directory, to)
        return to

    def analyzer(self, to: Path, **changes: Any) -> MotexFrameAnalyzer:
        """A fresh analyzer loaded from a copy at ``to``, its settings updated by ``changes``
        (run-time settings only: the state's fingerprint must still match)."""
        return MotexFrameAnalyzer.prepare(self.settings.updated(**changes), None, self.copy(to))


def folder_digest(directory: Path) -> str:
    """SHA-256 over every file's relative path and bytes: equal digests, equal folders."""
    digest = hashlib.sha256()
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            digest.update(path.relative_to(directory).as_posix().encode() + b"\0")
            digest.update(path.read_bytes())
    return digest.hexdigest()


def shared_state(
    series: TwoMotifSeries, settings: LiveModelSettings, directory: Path
) -> Iterator[PreparedState]:
    """Prepare once, hand the state out, and fail the session's teardown if a test wrote
    into the shared folder (a leak that would make later tests depend on test order)."""
    state = PreparedState(series, settings, prepare_on_first_frame(settings, series, directory))
    before = folder_digest(directory)
    yield state
    assert folder_digest(directory) == before, f"a test wrote into the shared state {directory}"
