"""DiffPy's grid bookkeeping: which r points and pairs enter a calculation, and the Q grid.

All rounding here follows libdiffpy (PDFUtils ``rminSteps``/``rmaxSteps`` with an absolute
epsilon), because an off-by-one in the extended range or in the first kept Q changes G(r) at
the 1e-3 level, far above the 1e-6 we hold ourselves to.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from motex_stream.pdf.settings import PDFSettings

EPS = 1.4901161193847656e-08  # libdiffpy SQRT_DOUBLE_EPS, an absolute tolerance
PEAK_PRECISION = 3.33e-6  # DEFAULT_PEAKPRECISION
HALF_BOUND_REL = math.sqrt(-math.log(PEAK_PRECISION) / (4 * math.log(2)))
FWHM_PER_SIGMA = 2 * math.sqrt(2 * math.log(2))
MAX_EXTENSION = 10.0


def min_steps(x: float, h: float) -> int:
    c = math.ceil(x / h)
    return c - 1 if abs(x - (c - 1) * h) <= EPS else c


def max_steps(x: float, h: float) -> int:
    return math.ceil(x / h)


def width_correction(d: np.ndarray | float, settings: PDFSettings) -> np.ndarray:
    """Jeong's factor multiplying the variance: 1 - δ1/d - δ2/d² + (qbroad·d)²."""
    d = np.asarray(d, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = 1 - settings.delta1 / d - settings.delta2 / d**2 + (settings.qbroad * d) ** 2
    return np.where(d < np.finfo(float).eps, 0.0, corr)


def pair_sigma(d: np.ndarray | float, msd: np.ndarray | float, settings: PDFSettings) -> np.ndarray:
    """Gaussian σ of a pair peak (JeongPeakWidth): sqrt(msd·corr), 0 where corr <= 0."""
    corr = width_correction(d, settings)
    return np.sqrt(np.clip(np.asarray(msd, dtype=float) * corr, 0.0, None))


def max_peak_width(max_uii: float, settings: PDFSettings) -> float:
    """JeongPeakWidth.maxWidth: the widest FWHM any pair in the r range can have."""
    corr = max(1.0, *(float(width_correction(x, settings)) for x in (settings.rmin, settings.rmax)))
    return FWHM_PER_SIGMA * math.sqrt(2 * max_uii) * math.sqrt(corr)


@dataclass(frozen=True)
class RealSpaceGrid:
    """Index ranges of PDFCalculator for one settings/structure combination."""

    rstep: float
    extlo: int
    exthi: int
    clo: int
    chi: int
    qstep: float
    kmin: int
    kmax: int
    out_lo: int  # first output index (rminSteps(rmin))
    out_hi: int  # one past the last output index (rmaxSteps(rmax))

    @property
    def pair_dmin(self) -> float:
        return self.clo * self.rstep

    @property
    def pair_dmax(self) -> float:
        return self.chi * self.rstep

    @property
    def r_out(self) -> np.ndarray:
        return np.arange(self.out_lo, self.out_hi) * self.rstep

    @property
    def q(self) -> np.ndarray:
        """The kept Q points (Qmin..Qmax band) of the FFT grid."""
        return np.arange(self.kmin, self.kmax) * self.qstep

    @property
    def r_rdf(self) -> np.ndarray:
        """r points where RDF/r enters the forward transform: [max(extlo,1), exthi)."""
        return np.arange(max(self.extlo, 1), self.exthi) * self.rstep


def realspace_grid(settings: PDFSettings, max_uii: float) -> RealSpaceGrid:
    """PDFCalculator's ranges (pdf-engine.md §2.5 and §3 steps 1, 4, 5, 7)."""
    dr = settings.rstep
    ext_ripples = 6 * 2 * math.pi / settings.qmax if settings.qmax < math.pi / dr else 0.0
    ext_tails = HALF_BOUND_REL * max_peak_width(max_uii, settings)
    total = ext_ripples + ext_tails
    if total > MAX_EXTENSION:
        ext_ripples *= MAX_EXTENSION / total
        ext_tails *= MAX_EXTENSION / total
        total = MAX_EXTENSION
    extlo = max(0, min_steps(settings.rmin - ext_ripples, dr))
    exthi = max_steps(settings.rmax + ext_ripples, dr)
    clo = max(0, min_steps(settings.rmin - total, dr))
    chi = max_steps(settings.rmax + total, dr)
    npad2 = 2 ** math.ceil(math.log2(exthi))
    qstep = math.pi / (npad2 * dr)
    kmin = min_steps(settings.qmin, qstep)
    kmax = max_steps(min(settings.qmax, math.pi / dr), qstep)
    return RealSpaceGrid(
        rstep=dr,
        extlo=extlo,
        exthi=exthi,
        clo=clo,
        chi=chi,
        qstep=qstep,
        kmin=kmin,
        kmax=kmax,
        out_lo=min_steps(settings.rmin, dr),
        out_hi=max_steps(settings.rmax, dr),
    )
