"""Which fitting engine a prepared model is fitted with: numpy or torch, and the torch device.

Why it is recorded on the prepared model: :func:`motex_stream.analysis.steps.prepare_engine`
reads the settings once, and every later fit of that model (locally, or a chunk on a Dask
worker, which never sees the settings) must use the same engine. The local path and the Dask
path both read it here, so neither needs the other's module to know the key or the default.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from motex_stream.pdf.batched import PreparedModel

#: Where a prepared engine's cache holds (engine, device).
BACKEND_KEY = "fit_backend"
#: The fitting engine when the prepared engine records none.
DEFAULT_BACKEND = ("numpy", "auto")


def record_backend(engine: PreparedModel, name: str, device: str) -> None:
    """Fit ``engine`` with ``name`` (numpy or torch) on ``device`` from now on."""
    engine.engine_cache[BACKEND_KEY] = (str(name), str(device))


def recorded_backend(engine: PreparedModel) -> tuple[str, str]:
    """(engine, device) recorded on ``engine``; :data:`DEFAULT_BACKEND` if none."""
    name, device = engine.engine_cache.get(BACKEND_KEY, DEFAULT_BACKEND)
    return str(name), str(device)
