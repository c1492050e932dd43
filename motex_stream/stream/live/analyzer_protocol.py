"""The contract between the streaming service and the per-frame ML-MotEx analysis.

The service owns receiving, queueing, publishing and metrics; an analyzer owns the science.
Keeping this seam narrow lets the service be tested with any analyzer and lets the analysis
be swapped (isotropic/anisotropic fits, another surrogate) without touching transport code.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from motex_stream.stream.frames import ValidFrame


def _floats(values: Any) -> np.ndarray:
    """A float array of ``values``, ``None`` read as NaN (no value)."""
    return np.array([math.nan if v is None else v for v in values], dtype=float)


@dataclass(frozen=True)
class AtomValues:
    """The frame's contribution value of each permutable atom (file order) and its companions.

    Values are in Rwp units (fraction; negative = the atom helps the fit). NaN means no value
    this frame (sent as ``null``). ``interval`` and ``label`` are absent (None) from analyzers
    that compute no intervals.
    """

    atom: np.ndarray  # 1-based atom numbers in the starting-model file
    element: tuple[str, ...]
    value: np.ndarray
    spread: np.ndarray
    interval: tuple[np.ndarray, np.ndarray] | None = None  # (low, high) of each value
    label: tuple[str, ...] | None = None  # keep / remove / uncertain

    def __post_init__(self) -> None:
        n = len(self.atom)
        object.__setattr__(self, "atom", np.asarray(self.atom, dtype=int))
        object.__setattr__(self, "element", tuple(str(e) for e in self.element))
        object.__setattr__(self, "value", _floats(self.value))
        object.__setattr__(self, "spread", _floats(self.spread))
        if self.interval is not None:
            low, high = self.interval
            object.__setattr__(self, "interval", (_floats(low), _floats(high)))
        if self.label is not None:
            object.__setattr__(self, "label", tuple(str(x) for x in self.label))
        sizes = {len(self.element), len(self.value), len(self.spread)}
        if self.interval is not None:
            sizes |= {len(self.interval[0]), len(self.interval[1])}
        if self.label is not None:
            sizes.add(len(self.label))
        if sizes != {n}:
            raise ValueError(f"per-atom arrays of different lengths: {sorted(sizes | {n})}")

    def __len__(self) -> int:
        return len(self.atom)


@dataclass(frozen=True)
class BestFit:
    """The frame's best refitted motif."""

    mask: np.ndarray  # 0/1 per permutable atom
    rwp: float
    scale: float | None = None
    zoom: tuple[float, ...] | None = None  # one factor (isotropic) or three (anisotropic)

    def __post_init__(self) -> None:
        object.__setattr__(self, "mask", np.asarray(self.mask, dtype=int))
        if self.zoom is not None:
            zoom = np.atleast_1d(np.asarray(self.zoom, dtype=float)).ravel()
            object.__setattr__(self, "zoom", tuple(float(z) for z in zoom))


@dataclass(frozen=True)
class FitCurve:
    """The data and the best motif's G(r) on the (decimated) fit grid, for a live plot."""

    r: list[float]
    g: list[float]
    g_calc: list[float]


@dataclass(frozen=True)
class ModelDrawing:
    """The starting model as a live view draws it (atom numbers 1-based, file order).

    ``bonded[i]``: the permutable atoms atom i+1 goes with (itself for a permutable atom).
    ``equivalent``: symmetry-equivalent permutable atoms, one list per site of two or more.
    """

    elements: list[str]
    xyz: list[list[float]]
    permutable: list[int]
    bonded: list[list[int]]
    equivalent: list[list[int]] | None = None


@dataclass(frozen=True)
class ModelQuality:
    """How well the surrogate serving this frame predicts it, and where it stands."""

    mae: float | None = None  # GBDT MAE on held-out refits of this frame
    n_trees: int | None = None
    rebuilt: bool = False  # a freshly rebuilt surrogate serves this frame
    generation: int | None = None  # rebuilds since preparation
    # always False from the live analyzer since rebuilds are in line (issue 20); kept on
    # the wire so that receivers written for it still parse the message
    rebuild_started: bool | None = None
    fits_per_s: float | None = None  # motif refits per second on this frame


@dataclass(frozen=True)
class KeepSetChange:
    """A persistent change of the keep set (see :mod:`motex_stream.stream.live.changes`),
    dated to the first frame that showed any of its flips."""

    frame: int
    atoms_gained: tuple[int, ...]
    atoms_lost: tuple[int, ...]
    confidence: float

    def to_json(self) -> dict[str, Any]:
        """The change as JSON: what a message carries and a detector saves (NaN, ±inf → null).

        The change's own, so the wire format (``messages``) and the detector's saved state
        (``live/changes``) share one definition without the live side importing the wire
        format."""
        return {
            "frame": int(self.frame),
            "atoms_gained": [int(a) for a in self.atoms_gained],
            "atoms_lost": [int(a) for a in self.atoms_lost],
            "confidence": float(self.confidence) if math.isfinite(self.confidence) else None,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> KeepSetChange:
        """The inverse of :meth:`to_json` (``null`` confidence → NaN)."""
        confidence = data.get("confidence")
        return cls(
            frame=int(data["frame"]),
            atoms_gained=tuple(int(a) for a in data.get("atoms_gained") or ()),
            atoms_lost=tuple(int(a) for a in data.get("atoms_lost") or ()),
            confidence=math.nan if confidence is None else float(confidence),
        )


@dataclass(frozen=True)
class FrameResult:
    """Per-frame atom contribution values and what produced them."""

    model: str
    contributions: AtomValues
    best: BestFit
    timing: dict[str, float]  # seconds per stage: regrid, fit, train, explain, ...
    model_quality: ModelQuality = field(default_factory=ModelQuality)
    n_refit: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    # optional, for live views: the best motif's curve every frame, the model once per run
    fit: FitCurve | None = None
    structure: ModelDrawing | None = None
    # a persistent change of the keep set confirmed by this frame; None: no change
    change: KeepSetChange | None = None


class FrameAnalyzer(Protocol):
    """Analyses one frame against one prepared starting model."""

    name: str  # the model name: also the ZMQ topic

    @property
    def fit_r(self) -> np.ndarray:
        """The r grid (Å) frames are regridded onto before fitting."""
        ...

    def analyze(self, frame: ValidFrame) -> FrameResult:
        """Refit, update the surrogate, explain. ``frame`` was validated where it entered
        the service; FrameError for a frame this model cannot use (its r range does not
        cover the fit grid, G zero there)."""
        ...
