"""The one place that picks the fitting code for a prepared model: numpy isotropic, numpy
anisotropic (with its distance tables), or torch.

Why one dispatch: the local path (:func:`motex_stream.analysis.steps.fit_masks`) and every
Dask task (:func:`motex_stream.analysis.scale_out.fit_chunk`) fit chunks of the same
catalogue, and their answers must agree bit for bit; a second copy of this choice would let
them drift apart (a new zoom mode or backend added to one path only).
"""

from __future__ import annotations

import numpy as np

from motex_stream.fitting.anisotropic import fit_anisotropic, prep_tables
from motex_stream.fitting.isotropic import fit_isotropic
from motex_stream.fitting.results import FitResults
from motex_stream.pdf.batched import Backend, PreparedModel

#: The zoom modes a prepared model can be fitted in.
ZOOMS = ("isotropic", "anisotropic")


def check_zoom(zoom: str) -> None:
    """Refuse an unknown zoom mode before any work (or any task) is started."""
    if zoom not in ZOOMS:
        raise ValueError(f"unknown zoom mode {zoom!r}")


def call_chunk(backend: Backend, default: int) -> int:
    """Motifs per call for ``backend``: torch has its own bound (``torch_engine.CALL_CHUNK``,
    sized for device memory); numpy takes ``default``."""
    if backend.name == "torch":
        from motex_stream.fitting import torch_engine

        return torch_engine.CALL_CHUNK
    return default


def fit(
    prepared: PreparedModel,
    masks: np.ndarray,
    g: np.ndarray,
    zoom: str,
    backend: Backend | None = None,
) -> FitResults:
    """Fit one chunk of ``masks`` to ``g`` on ``backend`` (default: ``prepared.backend``).

    torch is imported only when asked for, so the numpy path never pays its import.
    """
    check_zoom(zoom)
    backend = prepared.backend if backend is None else backend
    if backend.name == "torch":
        from motex_stream.fitting import torch_engine

        return torch_engine.fit_torch(prepared, masks, g, zoom, backend.device)
    if zoom == "anisotropic":
        prep_tables(prepared)
        return fit_anisotropic(prepared, masks, g)
    return fit_isotropic(prepared, masks, g)
