"""A simulated PDF beamline: an ophyd detector that emits one G(r) per trigger.

Tests, the demo and benchmarks need real Bluesky documents (start, descriptor with the r grid
in its ``configuration``, events carrying G, stop) without a beamline. An ophyd v1 device run
by a real RunEngine produces exactly the documents a facility would, so every source is tested
against the genuine document layout rather than hand-written dicts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from bluesky import RunEngine
from bluesky.plans import count
from ophyd import Component, Device, Kind, Signal
from ophyd.sim import SynSignal
from ophyd.status import StatusBase

from motex_stream.stream.config.sources import DEFAULT_DATA_KEY, DEFAULT_R_KEY

logger = logging.getLogger(__name__)

FrameSourceFn = Callable[[int], np.ndarray]


def _float_array_description(name: str, value: Any, source: str) -> dict[str, dict[str, Any]]:
    """Describe a 1-D float64 array the way event-model's schema accepts it.

    ophyd writes ``dtype_numpy: 'float64'`` for ``dtype="float64"``, which the descriptor
    schema rejects; consumers (TiledWriter) need the array-protocol string ``'<f8'``.
    """
    arr = np.asarray(value, dtype="<f8")
    return {
        name: {
            "source": source,
            "dtype": "array",
            "shape": list(arr.shape),
            "dtype_numpy": "<f8",
        }
    }


class _GrSignal(SynSignal):
    """The G(r) readout: evaluates ``frame_source(i)`` for the i-th trigger (0-based)."""

    def describe(self) -> dict[str, dict[str, Any]]:
        return _float_array_description(self.name, self.get(), "SIM:pdf_gr")


class _GridSignal(Signal):
    """The detector's r grid; a configuration signal so it lands in the descriptor once."""

    def describe(self) -> dict[str, dict[str, Any]]:
        return _float_array_description(self.name, self.get(), "SIM:pdf_r")


class PDFDetector(Device):
    """A simulated reduced-PDF detector: ``gr`` is read per event, ``r`` is configuration.

    Construct it with :func:`make_pdf_detector`, which wires the frame callable and renames the
    signals to the requested data keys.
    """

    gr = Component(_GrSignal, kind=Kind.hinted)
    r = Component(_GridSignal, value=np.zeros(1), kind=Kind.config)

    def trigger(self) -> StatusBase:
        """Trigger the child signal: an ophyd ``Device`` does not trigger its children itself."""
        return self.gr.trigger()


def make_pdf_detector(
    frame_source: FrameSourceFn,
    r: np.ndarray,
    *,
    name: str = "pdf",
    data_key: str = DEFAULT_DATA_KEY,
    r_key: str = DEFAULT_R_KEY,
) -> PDFDetector:
    """Build a detector whose i-th trigger (0-based) reads ``frame_source(i)``.

    ``r`` goes into the configuration under ``r_key`` so the descriptor carries the grid; G goes
    into every event under ``data_key``. The first frame is evaluated eagerly so a shape mismatch
    between the grid and the frames is caught here, not halfway through a run.
    """
    r_arr = np.ascontiguousarray(r, dtype="<f8")
    counter = {"i": 0}

    def next_frame() -> np.ndarray:
        g = np.ascontiguousarray(frame_source(counter["i"]), dtype="<f8")
        counter["i"] += 1
        return g

    first = np.ascontiguousarray(frame_source(0), dtype="<f8")
    if first.shape != r_arr.shape:
        raise ValueError(f"frame_source(0) has shape {first.shape}, r grid has {r_arr.shape}")
    det = PDFDetector(name=name)
    det.gr._func = next_frame
    det.gr.put(first)
    det.r.put(r_arr)
    det.gr.name = data_key
    det.r.name = r_key
    return det


def make_run_engine(metadata: Mapping[str, Any] | None = None) -> RunEngine:
    """A RunEngine that does not install signal handlers, so it runs in tests and threads."""
    RE = RunEngine(dict(metadata or {}), context_managers=[])
    return RE


def run_series(
    RE: RunEngine,
    detector: PDFDetector,
    n_frames: int,
    delay: float = 0.0,
    md: Mapping[str, Any] | None = None,
) -> str:
    """Count ``n_frames`` frames with ``delay`` seconds between them; return the run uid."""
    uids = RE(count([detector], num=n_frames, delay=delay or None, md=dict(md or {})))
    logger.info("simulated run %s: %d frames", uids[0], n_frames)
    return str(uids[0])
