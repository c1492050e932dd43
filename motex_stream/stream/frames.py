"""What flows from a source into the service: run boundaries and validated PDF frames.

Every source (0MQ, Tiled live, Tiled replay, .gr files, Kafka) yields the same three item
types, so the service never knows where a frame came from. Run boundaries are separate items
because the service must never drop them, even under the ``latest`` policy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np


class FrameError(ValueError):
    """A frame that cannot be analysed (wrong shape, NaN, bad grid, ...). Never fatal."""


@dataclass(frozen=True)
class RunStart:
    """A run began. ``metadata`` is the start document (per-run overrides live there).

    ``resumed_after`` is set only by a source taking up a run from our own run journal after a
    restart: the last ``seq_num`` already published. It is a field of its own, never read from
    ``metadata``, because the start document comes from the network and must not be able to
    tell the service that frames were published (issue 19: a start claiming
    ``motex_resumed_after`` crashed the receiver or silently dropped frames).
    """

    uid: str
    time: float
    metadata: Mapping[str, Any] = field(default_factory=dict)
    resumed_after: int | None = None


@dataclass(frozen=True)
class RunStop:
    """A run ended (``exit_status`` as in the Bluesky stop document)."""

    uid: str
    time: float
    exit_status: str = "success"
    num_events: int | None = None


@dataclass(frozen=True)
class Frame:
    """One reduced PDF G(r) measured at ``time``; ``seq`` is 1-based within its run."""

    source: str  # run uid, or the file path for archived .gr series
    seq: int
    time: float
    r: np.ndarray
    g: np.ndarray
    run_metadata: Mapping[str, Any] = field(default_factory=dict)
    # the Q range the data were reduced with, when the source knows it (a .gr header): a model
    # prepared on this frame uses it unless its settings give one
    qmin: float | None = None
    qmax: float | None = None


StreamItem = RunStart | Frame | RunStop


def validate_frame(frame: Frame) -> Frame:
    """Reject frames the engine cannot use, with a message that says why."""
    r = np.asarray(frame.r, dtype=float)
    g = np.asarray(frame.g, dtype=float)
    if r.ndim != 1 or g.ndim != 1:
        raise FrameError(f"frame {frame.seq} of {frame.source}: r and G must be 1-D arrays")
    if r.shape != g.shape:
        raise FrameError(
            f"frame {frame.seq} of {frame.source}: r has {r.size} points but G has {g.size}"
        )
    if r.size < 10:
        raise FrameError(f"frame {frame.seq} of {frame.source}: only {r.size} points")
    if not (np.all(np.isfinite(r)) and np.all(np.isfinite(g))):
        raise FrameError(f"frame {frame.seq} of {frame.source}: NaN or infinite values")
    if np.any(np.diff(r) <= 0):
        raise FrameError(f"frame {frame.seq} of {frame.source}: r grid is not increasing")
    return Frame(
        frame.source, frame.seq, frame.time, r, g, frame.run_metadata, frame.qmin, frame.qmax
    )


def regrid(frame: Frame, r_target: np.ndarray) -> np.ndarray:
    """G of a validated frame on the model's fit grid (linear interpolation, no extrapolation)."""
    r_target = np.asarray(r_target, dtype=float)
    lo, hi = frame.r[0], frame.r[-1]
    tol = 1e-6
    if r_target[0] < lo - tol or r_target[-1] > hi + tol:
        raise FrameError(
            f"frame {frame.seq} of {frame.source}: covers r = {lo:.3f}..{hi:.3f} Å but the fit "
            f"needs {r_target[0]:.3f}..{r_target[-1]:.3f} Å"
        )
    return np.interp(r_target, frame.r, frame.g)
