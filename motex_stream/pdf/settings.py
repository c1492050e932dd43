"""PDF calculation settings, named as in DiffPy-CMI so reference scripts translate directly."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

BISO_TO_UISO = 1.0 / (8.0 * np.pi**2)


@dataclass(frozen=True)
class PDFSettings:
    """Instrument and model parameters of one PDF calculation.

    ``rmin``/``rmax``/``rstep`` describe the *calculator* grid. srfit derives them from the
    observed points as rmin = r[0], rstep = (r[-1]-r[0])/(n-1), rmax = r[-1] + rstep/2; use
    :meth:`for_data_grid` to get exactly that. ``biso`` is one value for every element or a
    mapping element → Biso (Å²); ``biso_default`` covers elements missing from the mapping.
    """

    rmin: float = 1.6
    rmax: float = 10.005
    rstep: float = 0.01
    qmin: float = 0.7
    qmax: float = 20.0
    qdamp: float = 0.05
    qbroad: float = 0.01
    delta1: float = 0.0
    delta2: float = 0.0
    biso: float | Mapping[str, float] = 0.4
    biso_default: float = 0.4
    scale: float = 1.0
    extra: dict[str, float] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        problems = []
        if not self.rstep > 0:
            problems.append(f"rstep must be > 0, got {self.rstep}")
        if not 0 <= self.rmin < self.rmax:
            problems.append(f"need 0 <= rmin < rmax, got rmin={self.rmin}, rmax={self.rmax}")
        if not 0 <= self.qmin < self.qmax:
            problems.append(f"need 0 <= qmin < qmax, got qmin={self.qmin}, qmax={self.qmax}")
        if self.qdamp < 0 or self.qbroad < 0:
            problems.append("qdamp and qbroad must be >= 0")
        bisos = self.biso.values() if isinstance(self.biso, Mapping) else [self.biso]
        if any(not np.isfinite(b) or b < 0 for b in [*bisos, self.biso_default]):
            problems.append(f"Biso values must be finite and >= 0, got {self.biso}")
        if problems:
            raise ValueError("invalid PDF settings: " + "; ".join(problems))

    @classmethod
    def for_data_grid(cls, r: np.ndarray, **kwargs: object) -> PDFSettings:
        """Settings whose calculator grid reproduces srfit's choice for observed points ``r``."""
        r = np.asarray(r, dtype=float)
        if r.size < 2:
            raise ValueError("need at least two observed points to define a grid")
        rstep = (r[-1] - r[0]) / (r.size - 1)
        return cls(rmin=float(r[0]), rmax=float(r[-1] + rstep / 2), rstep=float(rstep), **kwargs)

    def biso_of(self, symbol: str) -> float:
        if isinstance(self.biso, Mapping):
            return float(self.biso.get(symbol, self.biso_default))
        return float(self.biso)

    def uiso_of(self, symbol: str) -> float:
        return self.biso_of(symbol) * BISO_TO_UISO
