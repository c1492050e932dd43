"""The ``[service]`` table: where state lives, how metrics are served, how the queue behaves."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from motex_stream.stream.config.addresses import BindHost
from motex_stream.stream.config.base import ConfigModel

Policy = Literal["all", "latest"]


class ServiceConfig(ConfigModel):
    """The ``[service]`` table: one per file, required (it needs at least ``state_dir``)."""

    state_dir: Path = Field(
        description="folder where prepared models are kept (reloaded on restart)"
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
        64, ge=1, le=100_000, description="items that may wait between receivers and analysis"
    )
    queue_bytes: int = Field(
        256 * 2**20,
        ge=1024,
        description="bytes of frames that may wait between receivers and analysis (policy all: "
        "receivers wait beyond it)",
    )
    save_every: int = Field(
        20,
        ge=1,
        description="persist each model's warm-start progress every this many frames (and at a "
        "clean stop)",
    )
    save_interval_s: float = Field(
        60.0,
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
