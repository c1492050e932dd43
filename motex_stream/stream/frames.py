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
    """One reduced PDF G(r) measured at ``time``; ``seq`` is 1-based within its run.

    As a source read it: nothing about ``r`` and ``g`` is checked yet. What the service and
    the analyzers work on is a :class:`ValidFrame`.
    """

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


@dataclass(frozen=True)
class ValidFrame(Frame):
    """A frame the engine can use: ``r`` and ``g`` 1-D float arrays of one length (at least
    10 points), finite, ``r`` strictly increasing.

    Constructing one checks it (:class:`FrameError` saying why not), so holding one is the
    proof: a frame is validated once, where it enters (the document assembler, the file
    reader, the service's intake for sources that yield plain frames), and nothing after
    that checks it again. :func:`validate_frame` of a ``ValidFrame`` is the frame itself.
    """

    def __post_init__(self) -> None:
        r = np.asarray(self.r, dtype=float)
        g = np.asarray(self.g, dtype=float)
        where = f"frame {self.seq} of {self.source}"
        if r.ndim != 1 or g.ndim != 1:
            raise FrameError(f"{where}: r and G must be 1-D arrays")
        if r.shape != g.shape:
            raise FrameError(f"{where}: r has {r.size} points but G has {g.size}")
        if r.size < 10:
            raise FrameError(f"{where}: only {r.size} points")
        if not (np.all(np.isfinite(r)) and np.all(np.isfinite(g))):
            raise FrameError(f"{where}: NaN or infinite values")
        if np.any(np.diff(r) <= 0):
            raise FrameError(f"{where}: r grid is not increasing")
        object.__setattr__(self, "r", r)
        object.__setattr__(self, "g", g)


StreamItem = RunStart | Frame | RunStop


def validate_frame(frame: Frame) -> ValidFrame:
    """``frame`` as a :class:`ValidFrame` (checked now unless it already is one), or a
    :class:`FrameError` saying why the engine cannot use it."""
    if isinstance(frame, ValidFrame):
        return frame
    return ValidFrame(
        frame.source,
        frame.seq,
        frame.time,
        frame.r,
        frame.g,
        frame.run_metadata,
        frame.qmin,
        frame.qmax,
    )


def regrid(frame: ValidFrame, r_target: np.ndarray) -> np.ndarray:
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
