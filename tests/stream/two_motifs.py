"""Live settings and a prepared state for the two-motif series, shared by the live tests.

Every live test that runs the analyzer on :func:`motex_stream.stream.sim.series.two_motif_series`
prepares on frame 1 (pure motif A, as every such series starts) with settings that differ only
in size; one definition keeps them from drifting apart.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from motex_stream.analysis.settings import LiveModelSettings
from motex_stream.stream.frames import Frame
from motex_stream.stream.live.analyzer import MotexFrameAnalyzer
from motex_stream.stream.sim.series import TwoMotifSeries


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


def prepare_on_first_frame(
    settings: LiveModelSettings, series: TwoMotifSeries, directory: Path
) -> Path:
    """Prepare (catalogue fit + search) on frame 1 and persist into ``directory``."""
    MotexFrameAnalyzer.prepare(
        settings, Frame("reference", 1, 0.0, series.r, series.frame(0)), directory
    )
    return directory
