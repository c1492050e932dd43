"""What the dashboard knows: the published messages folded into per-model history.

The page is a view of this state, not of the message stream: a browser that connects late, or
reconnects after the dashboard or the service restarted, first gets a snapshot of everything
here and then the frames as they arrive. Each model keeps the frames of its current run
(bounded), the structure changes the service reported in that run (the page marks them), the
latest starting-model coordinates, and a longer timeline of error, latency and arrival time
for the trend plots. A new run starts when the message's ``source`` changes or its
``seq`` goes back (a run replayed from the start).

Folding is pure bookkeeping (no I/O) and thread-safe, so the server's subscriber thread and
its HTTP threads share one :class:`DashboardState`.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from motex_stream.analysis.jsonable import to_jsonable
from motex_stream.stream.messages import PublishedFrame, from_message

#: frames of the current run kept per model (the heatmap's width); older ones scroll out
MAX_FRAMES = 5000
#: frames whose fit curve is kept (scrolling back further shows no fit)
FIT_FRAMES = 300
#: points of the error/latency/rate timeline kept per model (across runs)
TIMELINE = 5000
#: structure changes kept per run (markers)
MAX_CHANGES = 500


def frame_record(published: PublishedFrame, arrived: float) -> dict[str, Any]:
    """The part of one frame the page draws, keyed compactly (JSON-safe, floats or None)."""
    result = published.result
    atoms, best, quality = result.contributions, result.best, result.model_quality
    none = [None] * len(atoms)
    low, high = atoms.interval if atoms.interval is not None else (none, none)
    received = published.received_at
    return {
        "seq": published.seq,
        "time": published.time,
        "published_at": to_jsonable(published.published_at),
        "arrived": arrived,
        "latency": None if received is None else to_jsonable(published.published_at - received),
        "values": to_jsonable(atoms.value),
        "spread": to_jsonable(atoms.spread),
        # interval and label per atom (None from a service that does not send them)
        "ci_low": to_jsonable(low),
        "ci_high": to_jsonable(high),
        "labels": none if atoms.label is None else list(atoms.label),
        "change": None if result.change is None else result.change.to_json(),
        "mask": best.mask.tolist(),
        "rwp": to_jsonable(best.rwp),
        "mae": to_jsonable(quality.mae),
        "n_trees": quality.n_trees,
        # a surrogate rebuilt from scratch serves from this frame on (the page marks it)
        "rebuilt": quality.rebuilt,
        "generation": quality.generation,
        "fit": to_jsonable(result.fit),
    }


@dataclass
class ModelView:
    """One model's history as the page needs it."""

    name: str
    atoms: list[int] = field(default_factory=list)
    elements: list[str] = field(default_factory=list)
    run: str = ""
    runs: int = 0
    frames: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=MAX_FRAMES))
    structure: dict[str, Any] | None = None
    timeline: deque[list[Any]] = field(default_factory=lambda: deque(maxlen=TIMELINE))
    messages: int = 0
    gaps: int = 0
    #: changes reported in the current run, each with ``at``: the arrival time of the frame
    #: it is dated to (where the trend plots put the marker) and ``reported``: its message's seq
    changes: list[dict[str, Any]] = field(default_factory=list)

    def snapshot(self) -> dict[str, Any]:
        """The view for a page that (re)connects; only the latest frame's fit curve is in it
        (a page asks for older ones with :meth:`fit` when it scrolls back), so a long run's
        snapshot stays small enough to draw within a second."""
        frames = [{**f, "fit": None} for f in self.frames]
        if frames:
            frames[-1]["fit"] = self.frames[-1]["fit"]
        return {
            "name": self.name,
            "atoms": self.atoms,
            "elements": self.elements,
            "run": self.run,
            "runs": self.runs,
            "frames": frames,
            "structure": self.structure,
            "timeline": list(self.timeline),
            "messages": self.messages,
            "gaps": self.gaps,
            "changes": list(self.changes),
        }

    def note_change(self, change: Mapping[str, Any], record: Mapping[str, Any]) -> dict[str, Any]:
        """Keep a reported change with where to draw it (see :attr:`changes`)."""
        frame = int(change.get("frame", record["seq"]))
        at = next((f["arrived"] for f in self.frames if f["seq"] == frame), record["arrived"])
        noted = {**change, "frame": frame, "at": at, "reported": record["seq"]}
        self.changes.append(noted)
        del self.changes[:-MAX_CHANGES]
        return noted


class DashboardState:
    """Every model's :class:`ModelView`, fed message by message from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.models: dict[str, ModelView] = {}
        self.messages = 0
        self.started = time.time()
        self.last_arrival: float | None = None

    def add(self, message: Mapping[str, Any], arrived: float | None = None) -> dict[str, Any]:
        """Fold one (validated) message in; return the update event the page applies."""
        arrived = time.time() if arrived is None else arrived
        published = from_message(message)
        result = published.result
        record = frame_record(published, arrived)
        name = result.model
        atoms = result.contributions.atom.tolist()
        source = published.run_uid
        with self._lock:
            self.messages += 1
            self.last_arrival = arrived
            view = self.models.get(name)
            if view is None or view.atoms != atoms:  # new model, or another starting model
                view = self.models[name] = ModelView(name, atoms=atoms)
                view.elements = list(result.contributions.element)
            last = view.frames[-1]["seq"] if view.frames else None
            new_run = not view.frames or source != view.run or record["seq"] <= last
            if new_run:
                view.frames.clear()
                view.changes.clear()
                view.run = source
                view.runs += 1
            elif record["seq"] != last + 1:
                view.gaps += 1
            if result.structure is not None:
                view.structure = to_jsonable(result.structure)
            view.frames.append(record)
            change = None
            if isinstance(record["change"], Mapping):
                change = view.note_change(record["change"], record)
            if len(view.frames) > FIT_FRAMES:
                view.frames[-FIT_FRAMES - 1]["fit"] = None  # only recent fits are kept
            view.messages += 1
            point = [arrived, record["mae"], record["latency"], record["rwp"]]
            view.timeline.append(point)
            return {
                "model": name,
                "new_run": new_run,
                "run": view.run,
                "runs": view.runs,
                "atoms": view.atoms,
                "elements": view.elements,
                "frame": record,
                "structure": to_jsonable(result.structure),
                "point": point,
                "messages": view.messages,
                "gaps": view.gaps,
                "change": change,
            }

    def fit(self, model: str, seq: int) -> dict[str, Any] | None:
        """The fit curve of frame ``seq`` of the model's current run, if still kept."""
        with self._lock:
            view = self.models.get(model)
            for frame in reversed(view.frames if view is not None else ()):
                if frame["seq"] == seq:
                    return frame["fit"]
            return None

    def snapshot(self) -> dict[str, Any]:
        """Everything, for a page that (re)connects."""
        with self._lock:
            return {
                "messages": self.messages,
                "started": self.started,
                "last_arrival": self.last_arrival,
                "models": {name: view.snapshot() for name, view in self.models.items()},
            }
