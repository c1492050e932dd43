"""The contract between the streaming service and the per-frame ML-MotEx analysis.

The service owns receiving, queueing, publishing and metrics; an analyzer owns the science.
Keeping this seam narrow lets the service be tested with any analyzer and lets the analysis
be swapped (isotropic/anisotropic fits, another surrogate) without touching transport code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from motex_stream.stream.frames import Frame


@dataclass(frozen=True)
class FrameResult:
    """Per-frame atom contribution values and what produced them."""

    model: str
    # one entry per permutable atom: {"atom": 1-based index in the starting-model file,
    # "element": str, "value": float (negative = atom helps the fit), "spread": float}
    contributions: list[dict[str, Any]]
    best: dict[str, Any]  # {"mask": [0/1 per permutable atom], "rwp": float}
    timing: dict[str, float]  # seconds per stage: regrid, fit, train, explain, ...
    model_quality: dict[str, float]  # {"mae": GBDT MAE on held-out refits of this frame, ...}
    n_refit: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    # optional, for live views: {"r", "g", "g_calc"} of the best motif on the fit grid
    # (decimated), and {"elements", "xyz", "permutable", "bonded"} of the model once per run
    fit: dict[str, Any] | None = None
    structure: dict[str, Any] | None = None
    # a persistent change of the keep set confirmed by this frame (see stream/live/changes.py):
    # {"frame", "atoms_gained", "atoms_lost", "confidence"}; None: no change
    change: dict[str, Any] | None = None


class FrameAnalyzer(Protocol):
    """Analyses one frame against one prepared starting model."""

    name: str  # the model name: also the ZMQ topic

    @property
    def fit_r(self) -> np.ndarray:
        """The r grid (Å) frames are regridded onto before fitting."""
        ...

    def analyze(self, frame: Frame) -> FrameResult:
        """Refit, update the surrogate, explain. Raises FrameError for unusable frames."""
        ...
