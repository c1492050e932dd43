"""The agent's policy and configuration: pydantic models read from a TOML file.

Why configuration and not code: what the agent may do at a beamline (which plan, how often,
whether the queue starts by itself) is the beamline team's decision, reviewed like any other
setting and changed without a release. The defaults are the safe ones: suggestions go to the
queue but the queue is not started (a human starts it), at most a few agent items wait in the
queue at once, and suggestions are rate limited.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

DEFAULT_QSERVER = "tcp://127.0.0.1:60615"


class _Strict(BaseModel):
    """Unknown keys are errors: a misspelt safety setting must not be silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class PlanTemplate(_Strict):
    """The plan the agent suggests, as the Queue Server names it (its allowed-plans list).

    ``args``/``kwargs`` are the plan's own (``count`` takes a *list* of detectors, hence
    ``[["det"]]``). ``md`` is merged under the agent's own ``motex_*`` metadata, never over it.
    """

    name: str = "count"
    args: list[Any] = Field(default_factory=lambda: [["det"]])
    kwargs: dict[str, Any] = Field(default_factory=lambda: {"num": 10})
    md: dict[str, Any] = Field(default_factory=dict)


class Policy(_Strict):
    """When the agent suggests, what, and the limits that keep it from flooding the queue.

    - ``dry_run``: decide and report, never touch the queue (try a policy on a live beam).
    - ``action``: ``"measure"`` queues :attr:`plan` (denser/faster measurement at the current
      condition); ``"pause"`` queues a ``queue_stop`` instruction at the front, so the queue
      halts after the running plan and the operator decides.
    - ``auto_start``: start the queue after adding an item. Off by default (human in the loop).
    - ``min_interval_s``: at least this long between two suggestions (others are reported
      as ``rate_limited``).
    - ``max_queued``: at most this many of the agent's items waiting in the queue (others are
      reported as ``capped``).
    - ``on_change``: act on confirmed ``change`` events (the reason the agent exists).
    - ``uncertain_fraction``: also act when this fraction of atoms is labelled ``uncertain``
      for ``persist_frames`` frames in a row; ``None`` (default) disables it.
    - ``max_mae``: also act when the model error (``model_quality.mae``) stays above this for
      ``persist_frames`` frames; ``None`` disables it.
    """

    dry_run: bool = False
    action: Literal["measure", "pause"] = "measure"
    auto_start: bool = False
    position: Literal["front", "back"] = "back"
    min_interval_s: float = Field(default=60.0, ge=0.0)
    max_queued: int = Field(default=2, ge=1)
    on_change: bool = True
    uncertain_fraction: float | None = Field(default=None, gt=0.0, le=1.0)
    max_mae: float | None = Field(default=None, gt=0.0)
    persist_frames: int = Field(default=3, ge=1)
    plan: PlanTemplate = Field(default_factory=PlanTemplate)


class QueueServerSettings(_Strict):
    """How to reach the RE Manager (0MQ control address) and as whom.

    ``timeout_s`` bounds every request: a dead Queue Server costs at most this long per
    attempt, in the agent's submit thread, never in the analysis.
    ``user_group`` must exist in the server's user-group permissions; giving the agent a group
    that only allows the suggested plan is the server-side half of the safety model.
    """

    zmq_control_addr: str = DEFAULT_QSERVER
    timeout_s: float = Field(default=2.0, gt=0.0)
    user: str = "motex-agent"
    user_group: str = "primary"


class ReportSettings(_Strict):
    """Where the decision trail goes: a Tiled server (key from ``MOTEX_TILED_API_KEY``)."""

    tiled_uri: str | None = None
    api_key_file: str | None = None


class AgentConfig(_Strict):
    """The whole ``motex-stream agent --config FILE``.

    ``subscribe``: the service's ZMQ PUB address; ``models``: topics to follow (empty: all).
    ``name`` identifies the agent in queue metadata and reports. ``metrics_port`` serves the
    ``motex_agent_*`` counters on ``metrics_host``.
    """

    name: str = "motex-agent"
    subscribe: str = "tcp://127.0.0.1:5578"
    models: list[str] = Field(default_factory=list)
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    # loopback unless a container network must reach it (deploy/compose/agent.toml)
    metrics_host: str = "127.0.0.1"
    queue_server: QueueServerSettings = Field(default_factory=QueueServerSettings)
    policy: Policy = Field(default_factory=Policy)
    report: ReportSettings = Field(default_factory=ReportSettings)

    @field_validator("name")
    @classmethod
    def _name_is_plain(cls, value: str) -> str:
        if not value or any(c.isspace() for c in value):
            raise ValueError("name must be non-empty without spaces")
        return value


def load_config(path: str | Path) -> AgentConfig:
    """Read and validate an agent TOML file (pydantic errors name the offending key)."""
    with Path(path).open("rb") as fh:
        data = tomllib.load(fh)
    return AgentConfig.model_validate(data)
