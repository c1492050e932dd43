"""PDF calculation settings, named as in DiffPy-CMI so reference scripts translate directly."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

BISO_TO_UISO = 1.0 / (8.0 * np.pi**2)


@dataclass(frozen=True, kw_only=True)
class PDFSettings:
    """Instrument and model parameters of one PDF calculation.

    No science defaults here: the values come from the one settings model
    (:class:`motex_stream.analysis.settings.ModelSettings`, via
    :func:`motex_stream.analysis.steps.pdf_settings`), so a default is never written twice.

    ``rmin``/``rmax``/``rstep`` describe the *calculator* grid. srfit derives them from the
    observed points as rmin = r[0], rstep = (r[-1]-r[0])/(n-1), rmax = r[-1] + rstep/2; use
    :meth:`for_data_grid` to get exactly that. ``biso`` is one value for every element or a
    mapping element → Biso (Å²); an element missing from the mapping is an error.
    """

    rmin: float
    rmax: float
    rstep: float
    qmin: float
    qmax: float
    qdamp: float
    qbroad: float
    biso: float | Mapping[str, float]
    delta1: float = 0.0
    delta2: float = 0.0
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
        if any(not np.isfinite(b) or b < 0 for b in bisos):
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
            if symbol not in self.biso:
                raise ValueError(f"no Biso given for element {symbol} (per-element Biso table)")
            return float(self.biso[symbol])
        return float(self.biso)

    def uiso_of(self, symbol: str) -> float:
        return self.biso_of(symbol) * BISO_TO_UISO
