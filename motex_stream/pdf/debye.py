"""DiffPy-CMI's ``DebyePDFCalculator`` for a finite cluster (the optional Debye mode).

Unlike the real-space calculator, pairs are weighted with Q-dependent form factors and the
result is normalised by N<f(Q)>² in Q space, so the shape depends on composition. The Q grid
is DiffPy's 'optimum' one (qstep = π/extended rmax) and G on the output grid comes from a
finer padded grid by linear interpolation, which is part of the reference result.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from motex_stream.pdf.formfactors import xray_form_factor
from motex_stream.pdf.grid import (
    HALF_BOUND_REL,
    MAX_EXTENSION,
    max_peak_width,
    max_steps,
    min_steps,
    pair_sigma,
)
from motex_stream.pdf.realspace import cluster_pairs, damping
from motex_stream.pdf.settings import PDFSettings


def debye_q_grid(settings: PDFSettings, max_uii: float) -> tuple[float, int, int, int]:
    """(qstep, nq, clo, chi) of DebyePDFCalculator for these settings."""
    dr = settings.rstep
    ext = min(
        MAX_EXTENSION,
        6 * 2 * math.pi / settings.qmax + HALF_BOUND_REL * max_peak_width(max_uii, settings),
    )
    clo = max(0, min_steps(settings.rmin - ext, dr))
    chi = max_steps(settings.rmax + ext, dr)
    rmax_ext = chi * dr
    qstep = math.pi / rmax_ext if settings.qmax * rmax_ext / math.pi > 4 else settings.qmax / 4
    nq = math.ceil(settings.qmax / qstep)
    return qstep, nq, clo, chi


def debye_pdf(
    symbols: Sequence[str], positions: np.ndarray, settings: PDFSettings
) -> tuple[np.ndarray, np.ndarray]:
    """G(r) of one cluster as DiffPy's DebyePDFCalculator computes it; returns (r, G)."""
    dr = settings.rstep
    out_lo, out_hi = min_steps(settings.rmin, dr), max_steps(settings.rmax, dr)
    r_out = np.arange(out_lo, out_hi) * dr
    if len(symbols) == 0:
        return r_out, np.zeros_like(r_out)
    positions = np.asarray(positions, dtype=float).reshape(-1, 3)
    uiso = np.array([settings.uiso_of(s) for s in symbols])
    qstep, nq, clo, chi = debye_q_grid(settings, float(uiso.max()))
    q = np.arange(nq) * qstep
    elements = sorted(set(symbols))
    fq = {e: xray_form_factor(e, q) for e in elements}
    f_of_atom = np.array([fq[s] for s in symbols])  # (N, nq)
    pairs = cluster_pairs(positions, clo * dr, chi * dr)
    value = np.zeros(nq)
    if len(pairs.distance):
        sigma = pair_sigma(pairs.distance, uiso[pairs.i] + uiso[pairs.j], settings)
        d = pairs.distance[:, None]
        term = (
            2
            * np.exp(-0.5 * (sigma[:, None] * q[None, :]) ** 2)
            * f_of_atom[pairs.i]
            * f_of_atom[pairs.j]
            / d
            * np.sin(q[None, :] * d)
        )
        value = term.sum(axis=0)
    n = len(symbols)
    mean_f = f_of_atom.sum(axis=0) / n
    f_q = value / (n * mean_f**2)
    f_q[: min_steps(settings.qmin, qstep)] = 0.0
    n_from_dr = math.ceil(math.pi / dr / qstep)
    npad2 = 2 ** math.ceil(math.log2(max(nq, n_from_dr)))
    drpad = math.pi / (npad2 * qstep)
    x = r_out / drpad
    m0 = np.floor(x).astype(int)
    w = x - m0
    r_pad = np.stack([m0, m0 + 1]) * drpad  # only the two padded points each output needs
    g_pad = (2 / math.pi) * qstep * (np.sin(r_pad[..., None] * q) @ f_q)
    g = (1 - w) * g_pad[0] + w * g_pad[1]
    return r_out, g * settings.scale * damping(r_out, settings)
