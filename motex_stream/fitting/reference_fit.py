"""The reference method, one motif at a time: exact cluster PDF + scipy least squares.

This is what ML-MotEx does with DiffPy-CMI (PDFGenerator + srfit + MINPACK ``leastsq`` from
(mc, a, b, c) = (1, 1, 1, 1)), rebuilt on our exact real-space calculator. It is slow by
design: it is the baseline the batched engine is measured and checked against.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import leastsq

from motex_stream.fitting.restraint import ZoomRestraint
from motex_stream.fitting.results import FitResults, rwp
from motex_stream.pdf.debye import debye_pdf
from motex_stream.pdf.realspace import realspace_pdf
from motex_stream.pdf.settings import PDFSettings
from motex_stream.structure.starting_model import StartingModel

CALCULATORS = {"realspace": realspace_pdf, "debye": debye_pdf}


def motif_pdf(
    model: StartingModel,
    mask: np.ndarray,
    settings: PDFSettings,
    r_data: np.ndarray,
    zoom: np.ndarray | float = 1.0,
    calculator: str = "realspace",
) -> np.ndarray:
    """Exact G of one motif (zoom scales each Cartesian axis) on the data points.

    ``calculator``: "realspace" (DiffPy's PDFCalculator, what ML-MotEx fits) or "debye"
    (DebyePDFCalculator semantics)."""
    symbols, positions = model.motif_positions(np.asarray(mask, dtype=bool))
    pdf = CALCULATORS[calculator]
    r_calc, g = pdf(symbols, positions * np.broadcast_to(zoom, (3,)), settings)
    return np.interp(r_data, r_calc, g)


def reference_fit(
    model: StartingModel,
    masks: np.ndarray,
    g_obs: np.ndarray,
    r_data: np.ndarray,
    settings: PDFSettings,
    restraint: ZoomRestraint | None = None,
    calculator: str = "realspace",
) -> FitResults:
    """Fit each motif like the reference script: free mc and three zooms, soft restraints."""
    if calculator not in CALCULATORS:
        raise ValueError(f"calculator must be one of {sorted(CALCULATORS)}, got {calculator!r}")
    restraint = restraint or ZoomRestraint()
    masks = np.atleast_2d(np.asarray(masks, dtype=bool))
    out_rwp, out_scale, out_zoom = [], [], []
    for mask in masks:
        if not mask.any():
            out_rwp.append(1.0)
            out_scale.append(0.0)
            out_zoom.append(np.ones(3))
            continue

        def residual(p: np.ndarray, mask: np.ndarray = mask) -> np.ndarray:
            g = motif_pdf(model, mask, settings, r_data, p[1:], calculator)
            return np.concatenate([p[0] * g - g_obs, restraint.residual(p[1:])])

        p, _ier = leastsq(residual, np.ones(4))
        g = motif_pdf(model, mask, settings, r_data, p[1:], calculator)
        out_rwp.append(rwp(g_obs, p[0] * g))
        out_scale.append(p[0])
        out_zoom.append(p[1:])
    return FitResults(
        np.array(out_rwp), np.array(out_scale), np.array(out_zoom), f"reference-{calculator}"
    )
