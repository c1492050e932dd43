"""What a live view draws besides the contribution values: the best fit and the model.

The dashboard plots the frame's G(r) with the best motif's fit and shows the starting model in
3-D. Both travel in the published message as optional fields (``fit`` every frame,
``structure`` once per run), built here so the analyzer only has to call two functions.
The fit curve is the exact cluster PDF of the best motif with the refined scale and zoom: its
Rwp equals the batched fit's to the engine's accuracy, so the plot shows what was fitted.
"""

from __future__ import annotations

import numpy as np

from motex_stream.fitting.reference_fit import motif_pdf
from motex_stream.pdf.batched import PreparedModel
from motex_stream.stream.live.analyzer_protocol import FitCurve, ModelDrawing

#: at most this many points of the fit grid are sent (every k-th point, ends kept)
FIT_POINTS = 500
#: decimals kept of G and the fitted curve
DECIMALS = 5


def decimation(n: int, limit: int = FIT_POINTS) -> np.ndarray:
    """Indices of at most ``limit`` points spread evenly over ``n`` (all of them if n ≤ limit)."""
    if n <= limit:
        return np.arange(n)
    step = int(np.ceil(n / limit))
    return np.arange(0, n, step)


def best_fit(
    engine: PreparedModel,
    mask: np.ndarray,
    scale: float,
    zoom: np.ndarray,
    g: np.ndarray,
    points: int = FIT_POINTS,
) -> FitCurve:
    """The data and the best motif's G on the (decimated) fit grid."""
    r = engine.r_data
    calc = scale * motif_pdf(engine.model, np.asarray(mask, bool), engine.settings, r, zoom)
    keep = decimation(len(r), points)
    # 5 decimals of G (Å⁻²) are far below what a plot shows and halve the message's size
    return FitCurve(
        r=np.round(r[keep], 6).tolist(),
        g=np.round(g[keep], DECIMALS).tolist(),
        g_calc=np.round(calc[keep], DECIMALS).tolist(),
    )


def structure(engine: PreparedModel, equivalent: list[list[int]] | None = None) -> ModelDrawing:
    """The starting model as the page draws it (atom numbers are 1-based, file order).

    ``bonded[i]`` lists the permutable atoms that atom i+1 goes with: itself for a permutable
    atom, the permutable atoms within the threshold for a dependent one (kept if any of them
    is kept, as in the catalogue). ``equivalent``: symmetry-equivalent sites, 1-based.
    """
    model = engine.model
    bonded: list[list[int]] = [[] for _ in range(model.n_atoms)]
    for atom in model.permutable:
        bonded[atom] = [int(atom) + 1]
    for row, atom in enumerate(model.dependent):
        bonded[atom] = (model.permutable[model.bonded[row]] + 1).tolist()
    return ModelDrawing(
        elements=list(model.symbols),
        xyz=np.round(model.positions, 4).tolist(),
        permutable=(model.permutable + 1).tolist(),
        bonded=bonded,
        equivalent=equivalent,
    )
