"""DiffPy-CMI's real-space ``PDFCalculator`` for a finite cluster (what ML-MotEx fits).

G(r) is a sum of unit-area Gaussians (one per pair, width from JeongPeakWidth), divided by
the pair distance, normalised by N<f(0)>², band-limited to Qmin..Qmax by a sine transform over
an extended r range, then damped by exp(-(qdamp r)²/2). The FFT of libdiffpy is written here
as the equivalent explicit sine sums: identical up to round-off, and it exposes the linear
structure (pairs → Q-space kernel → G) that the batched engine relies on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from motex_stream.pdf.formfactors import xray_f0
from motex_stream.pdf.grid import (
    EPS,
    FWHM_PER_SIGMA,
    HALF_BOUND_REL,
    RealSpaceGrid,
    pair_sigma,
    realspace_grid,
)
from motex_stream.pdf.settings import PDFSettings

GAUSS_NORM = 2 * math.sqrt(math.log(2) / math.pi)
FOUR_LN2 = 4 * math.log(2)


@dataclass(frozen=True)
class PairList:
    """Pairs i > j of a cluster that fall in the calculator's pair range."""

    i: np.ndarray
    j: np.ndarray
    distance: np.ndarray
    delta: np.ndarray  # (P, 3) Cartesian difference vectors, for anisotropic zooms


def cluster_pairs(positions: np.ndarray, dmin: float, dmax: float) -> PairList:
    """All pairs with dmin <= d <= dmax (DiffPy drops the rest entirely), self pairs skipped."""
    n = len(positions)
    i, j = np.tril_indices(n, k=-1)
    delta = positions[i] - positions[j]
    d = np.sqrt((delta**2).sum(axis=1))
    keep = (d >= dmin) & (d <= dmax) & (d > EPS)
    return PairList(i[keep], j[keep], d[keep], delta[keep])


def gaussian_windows(
    d: np.ndarray, sigma: np.ndarray, grid: RealSpaceGrid
) -> tuple[np.ndarray, np.ndarray]:
    """Per-pair peak samples y(r_j - d)/d on the RDF grid, as (first index, (P, W) values).

    The window follows PDFCalculator.addPairContribution: floor((d ∓ b)/dr), clipped to the
    accumulation range [clo, chi), and only points in [max(extlo,1), exthi) reach the RDF.
    The floor-based window can include one point just outside ±b; DiffPy evaluates the
    Gaussian there too (dropping it costs 2e-7 relative against the golden curves).
    """
    dr = grid.rstep
    fwhm = sigma * FWHM_PER_SIGMA
    bound = HALF_BOUND_REL * fwhm
    jlo = np.maximum(np.floor((d - bound) / dr).astype(np.int64), grid.clo)
    jhi = np.minimum(np.floor((d + bound) / dr).astype(np.int64), grid.chi - 1)
    width = int(max(1, (jhi - jlo).max(initial=0) + 1))
    j = jlo[:, None] + np.arange(width)[None, :]
    x = j * dr - d[:, None]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        y = (GAUSS_NORM / fwhm[:, None]) * np.exp(-FOUR_LN2 * x**2 / fwhm[:, None] ** 2)
        y = y / d[:, None]
    valid = (j <= jhi[:, None]) & (j >= max(grid.extlo, 1)) & (j < grid.exthi) & (fwhm[:, None] > 0)
    return jlo, np.where(valid, y, 0.0)


def sine_matrix(r: np.ndarray, q: np.ndarray) -> np.ndarray:
    return np.sin(np.outer(r, q))


def band_limit(rdf_per_r: np.ndarray, grid: RealSpaceGrid) -> np.ndarray:
    """RDF/r on indices [0, exthi) → Q-space F_k for the kept band k in [kmin, kmax)."""
    r = np.arange(grid.exthi) * grid.rstep
    return grid.rstep * (sine_matrix(grid.q, r) @ rdf_per_r)


def q_to_g(f_q: np.ndarray, grid: RealSpaceGrid, settings: PDFSettings) -> np.ndarray:
    """F(Q) on the kept band → G on the output grid, with scale and Qdamp envelopes."""
    r = grid.r_out
    g = (2 / math.pi) * grid.qstep * (sine_matrix(r, grid.q) @ f_q)
    return g * settings.scale * damping(r, settings)


def damping(r: np.ndarray, settings: PDFSettings) -> np.ndarray:
    if settings.qdamp > 0:
        return np.exp(-0.5 * (settings.qdamp * r) ** 2)
    return np.ones_like(r)


def realspace_pdf(
    symbols: Sequence[str], positions: np.ndarray, settings: PDFSettings
) -> tuple[np.ndarray, np.ndarray]:
    """G(r) of one cluster exactly as diffpy.srfit's PDFGenerator (non-periodic) computes it.

    Returns (r, G) on the calculator grid r = n·rstep, n = rminSteps(rmin)..rmaxSteps(rmax)-1.
    """
    positions = np.asarray(positions, dtype=float).reshape(-1, 3)
    uiso = np.array([settings.uiso_of(s) for s in symbols])
    if len(symbols) == 0:
        grid = realspace_grid(settings, max_uii=0.0)
        return grid.r_out, np.zeros(grid.out_hi - grid.out_lo)
    grid = realspace_grid(settings, max_uii=float(uiso.max()))
    f0 = np.array([xray_f0(s) for s in symbols])
    pairs = cluster_pairs(positions, grid.pair_dmin, grid.pair_dmax)
    rdf_per_r = np.zeros(grid.exthi)
    if len(pairs.distance):
        sigma = pair_sigma(pairs.distance, uiso[pairs.i] + uiso[pairs.j], settings)
        jlo, y = gaussian_windows(pairs.distance, sigma, grid)
        weight = 2 * f0[pairs.i] * f0[pairs.j]
        idx = jlo[:, None] + np.arange(y.shape[1])[None, :]
        inside = idx < grid.exthi
        np.add.at(rdf_per_r, idx[inside], (weight[:, None] * y)[inside])
    norm = len(symbols) * (f0.mean() ** 2)
    f_q = band_limit(rdf_per_r / norm, grid)
    return grid.r_out, q_to_g(f_q, grid, settings)
