"""The refit of the next frame, done on a second thread while this frame is trained and
explained (issue 23: use both cores on the live path).

Why it may be done ahead: a frame's refit (:func:`motex_stream.analysis.steps.fit_masks` of
its catalogue rows on the engine) depends only on the frame's G, the engine, the run's zoom
and the refit indices (seeded by the frame's seq), never on the model, which is what frame n
changes. So while frame n continues boosting, explains and builds its intervals, the fit of
frame n+1 can run beside it, and frame n+1 finds it done. The science call is the same one;
only the thread it runs on differs, so the published numbers are those without it.

Bounded by counts, never by time: one slot (at most one frame ahead), filled only for a frame
the service already holds in its queue (:class:`FitsAhead`), used only by the frame it was
made for (same run, seq, G, zoom and rows), otherwise dropped and counted. A rebuilt frame
refits the whole catalogue; a subset fitted ahead for it is fitted again in line as one call
(the in-line path's exact call), counted as ``redone``. A fit ahead that failed is done again
in line, so the frame gets the error, or the answer, it would have got without it.

One user of the engine at a time: :meth:`FitAhead.take` waits for the fit in flight, and the
analyzer calls :meth:`FitAhead.settle` before it uses the engine again (the confirming pass),
so two fits never run at once (their caches and BLAS thread limits are process-wide).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from motex_stream.fitting.results import FitResults

log = logging.getLogger(__name__)


#: What a fit made ahead is counted as: started, then one of used, dropped, redone, failed.
OUTCOMES = ("started", "used", "dropped", "redone", "failed")


@dataclass(frozen=True)
class AheadKey:
    """What a frame's refit depends on besides the engine: the frame (run and seq), its G on
    the fit grid, the zoom mode and the catalogue rows refitted."""

    source: str
    seq: int
    g: np.ndarray
    zoom: str
    rows: np.ndarray

    def same_frame(self, other: AheadKey) -> bool:
        return (
            self.source == other.source
            and self.seq == other.seq
            and np.array_equal(self.g, other.g)
        )

    def same_fit(self, other: AheadKey) -> bool:
        return (
            self.same_frame(other)
            and self.zoom == other.zoom
            and np.array_equal(self.rows, other.rows)
        )


@dataclass(frozen=True)
class AheadFit:
    """A fit done ahead: its results and the seconds the fit itself took (the frame's
    ``fits_per_s`` is of the fit, not of the wait for it)."""

    fits: FitResults
    seconds: float


class FitAhead:
    """One slot for the refit of the next frame, on one background thread.

    Counts what became of each fit started: ``used`` (its frame took it), ``dropped`` (the
    next frame analysed was another one: its own frame was skipped, failed or never came),
    ``redone`` (its frame was rebuilt and refits the whole catalogue), ``failed`` (it raised;
    fitted again in line).
    """

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self._slot: tuple[AheadKey, Future[AheadFit]] | None = None
        self.started = 0
        self.used = 0
        self.dropped = 0
        self.redone = 0
        self.failed = 0

    def counts(self) -> dict[str, int]:
        """Each of :data:`OUTCOMES` with its count (what /metrics carries)."""
        return {outcome: getattr(self, outcome) for outcome in OUTCOMES}

    def start(self, key: AheadKey, fit: Callable[[], FitResults]) -> None:
        """Run ``fit`` (the refit of ``key``'s frame) on the background thread; a fit still
        in the slot is finished and dropped first (one frame ahead at most)."""
        self.discard()
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="fit-ahead")

        def timed() -> AheadFit:
            t = time.perf_counter()
            fits = fit()
            return AheadFit(fits, time.perf_counter() - t)

        self._slot = (key, self._pool.submit(timed))
        self.started += 1

    def take(self, key: AheadKey) -> AheadFit | None:
        """The fit done ahead for ``key``, waiting for it if it is still running; None (fit in
        line) when the slot is empty or holds another frame's or another fit's (counted)."""
        slot, self._slot = self._slot, None
        if slot is None:
            return None
        held, future = slot
        error = future.exception()  # waits: the engine has one user at a time
        if not held.same_frame(key):
            self.dropped += 1
            log.info(
                "fit ahead of frame %d of %s dropped: frame %d of %s was analysed next "
                "(%d dropped so far)",
                held.seq,
                held.source,
                key.seq,
                key.source,
                self.dropped,
            )
            return None
        if not held.same_fit(key):
            self.redone += 1
            log.debug(
                "fit ahead of frame %d of %s redone in line: %d rows fitted ahead, %d needed",
                key.seq,
                key.source,
                len(held.rows),
                len(key.rows),
            )
            return None
        if error is not None:
            self.failed += 1
            log.warning(
                "fit ahead of frame %d of %s failed (%r); fitted again in line",
                key.seq,
                key.source,
                error,
            )
            return None
        self.used += 1
        return future.result()

    def settle(self) -> None:
        """Wait until the fit in flight, if any, is done (it stays in the slot): the caller
        is about to use the engine itself."""
        if self._slot is not None:
            self._slot[1].exception()

    def discard(self) -> None:
        """Drop the fit in the slot, if any (finished first), counted as dropped."""
        slot, self._slot = self._slot, None
        if slot is None:
            return
        held, future = slot
        future.exception()
        self.dropped += 1
        log.info(
            "fit ahead of frame %d of %s dropped (%d dropped so far)",
            held.seq,
            held.source,
            self.dropped,
        )
