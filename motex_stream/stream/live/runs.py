"""What the live analyzer keeps per raw run: one bounded structure.

A run's settings (its overrides, validated once), its keep-set change detector and whether
the starting model was sent with it live together in one :class:`LiveRun`. Runs are kept in
the order they were last seen and only the least recently seen one is let go when there are
more than ``capacity``: a run that is still sending frames is seen on every frame, so the runs
that pass by never take its state (its change in progress) away.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

from motex_stream.analysis.settings import LiveModelSettings
from motex_stream.stream.live.changes import KeepSetChangeDetector

#: Runs whose state is kept (a beamline has one or two runs open at once).
RUNS_KEPT = 64


@dataclass
class LiveRun:
    """One run's state in one analyzer."""

    settings: LiveModelSettings | None = None  # the run's settings (overrides applied)
    detector: KeepSetChangeDetector | None = None  # its keep-set change detector
    described: bool = False  # the starting model was sent with one of its frames


class LiveRuns:
    """The analyzer's runs, least recently seen first; at most ``capacity`` of them."""

    def __init__(self, capacity: int = RUNS_KEPT) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self._runs: OrderedDict[str, LiveRun] = OrderedDict()

    def __getitem__(self, run: str) -> LiveRun:
        """The state of ``run`` (new if unknown), now its most recently seen."""
        state = self._runs.get(run)
        if state is None:
            state = self._runs[run] = LiveRun()
            while len(self._runs) > self.capacity:
                self._runs.popitem(last=False)
        else:
            self._runs.move_to_end(run)
        return state

    def peek(self, run: str) -> LiveRun | None:
        """The state of ``run`` if it is known, without making it the most recently seen (a
        look ahead at the next frame must not change which run is let go)."""
        return self._runs.get(run)

    def __len__(self) -> int:
        return len(self._runs)

    def __contains__(self, run: object) -> bool:
        return run in self._runs

    def detectors(self) -> dict[str, KeepSetChangeDetector]:
        """Every run's change detector (what the state folder keeps across restarts)."""
        return {run: s.detector for run, s in self._runs.items() if s.detector is not None}

    def restore(self, detectors: Mapping[str, KeepSetChangeDetector]) -> None:
        """Take up the detectors a restart left (in their saved order, at most ``capacity``)."""
        for run, detector in detectors.items():
            self[run].detector = detector
