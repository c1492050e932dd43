"""The ``[service]`` table: where state lives, how metrics are served, how the queue behaves."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from motex_stream.stream.config.addresses import BindHost
from motex_stream.stream.config.base import ConfigModel

Policy = Literal["all", "latest"]

# The defaults written once: the service (service.py) and the analyzers' saves
# (commands/runner.py) take them from here.
#: Items, and bytes of frames, that may wait between the receivers and the analysis.
DEFAULT_QUEUE_SIZE = 64
DEFAULT_QUEUE_BYTES = 256 * 2**20
#: Each model's warm-start progress is saved every this many frames, or seconds.
DEFAULT_SAVE_EVERY = 20
DEFAULT_SAVE_INTERVAL_S = 60.0
#: Whether the next frame's refit runs on a second thread beside this frame's analysis.
DEFAULT_FIT_AHEAD = True


class ServiceConfig(ConfigModel):
    """The ``[service]`` table: one per file, required (it needs at least ``state_dir``)."""

    # Required in a file (a beamline service always keeps its state), but typed optional: a
    # command that builds its config from flags (`replay` without --state-dir) says None.
    state_dir: Path | None = Field(
        description="folder where prepared models are kept (reloaded on restart) and the open "
        "runs are journalled (resumed on restart)"
    )
    metrics_port: int = Field(
        9464, ge=0, le=65535, description="Prometheus /metrics port; 0 turns the server off"
    )
    metrics_host: BindHost = Field(
        "127.0.0.1",
        min_length=1,
        description="interface the metrics server binds; metrics reveal run uids and timings, "
        "so open it (0.0.0.0) only behind a firewall",
    )
    dashboard_port: int = Field(
        0, ge=0, le=65535, description="port of the live web page (docs/dashboard.md); 0: off"
    )
    dashboard_host: BindHost = Field(
        "127.0.0.1",
        min_length=1,
        description="interface the dashboard binds; it shows run uids and results, so open it "
        "(0.0.0.0) only behind a firewall",
    )
    queue_size: int = Field(
        DEFAULT_QUEUE_SIZE,
        ge=1,
        le=100_000,
        description="items that may wait between receivers and analysis",
    )
    queue_bytes: int = Field(
        DEFAULT_QUEUE_BYTES,
        ge=1024,
        description="bytes of frames that may wait between receivers and analysis (policy all: "
        "receivers wait beyond it)",
    )
    save_every: int = Field(
        DEFAULT_SAVE_EVERY,
        ge=1,
        description="persist each model's warm-start progress every this many frames (and at a "
        "clean stop)",
    )
    save_interval_s: float = Field(
        DEFAULT_SAVE_INTERVAL_S,
        gt=0.0,
        description="also persist it when this many seconds passed since the last save and new "
        "frames were analysed",
    )
    dask: str | None = Field(
        None,
        min_length=1,
        description="Dask scheduler address (e.g. tcp://10.0.0.5:8786) on which catalogue fits "
        "run, preparation and per-frame refits alike; needs the distributed extra; results are "
        "the same as without it (not part of a model's fingerprint)",
    )
    policy: Policy = Field(
        "all",
        description="all: every frame, back-pressure when behind; latest: stale frames are "
        "skipped (counted) so the output keeps up with the beam",
    )
    fit_ahead: bool = Field(
        DEFAULT_FIT_AHEAD,
        description="while a frame is trained and explained, refit the next frame (when it is "
        "already waiting) on a second thread; the published results are the same either way",
    )
    restart_sources: bool = Field(
        True,
        description="restart a source whose receiver fails (after a pause); false: the source "
        "ends there (what `replay` does: a finite input that fails ends the replay, which says so)",
    )
