"""Change detection on the live stream: when the set of ``keep`` atoms changes for good.

A change is made of atoms whose label changed *with confidence*: an atom that was ``keep``
and is now ``remove``, or the reverse, and holds the new label on ``persist`` consecutive
frames. An ``uncertain`` frame breaks the run. Why this and not "the keep set differs":

* one noisy frame never counts (``persist``);
* a borderline atom that wanders between ``keep`` and ``uncertain`` (its interval touches 0)
  is not a change of structure, and with ``persist`` frames to wait it would still raise
  false alarms on a long stationary series. Only a confident opposite label moves an atom.

Each atom's committed label starts unknown; the first label it holds for ``persist`` frames is
adopted silently (the baseline, also for atoms that were uncertain and later settle). Later
settlings of such atoms into ``keep`` are reported only as part of a change that has at least
one confident flip.

A change names both sides: ``atoms_gained`` are the atoms that became ``keep``, ``atoms_lost``
the atoms that stopped being ``keep``. An old motif's atoms do not always go confidently
``remove`` when it vanishes: their interval may stay across 0 (``uncertain``) for a while. So
while a change is open (it still takes a confident flip to open one), a committed ``keep``
atom that has held no ``keep`` label for ``persist`` frames in a row is lost too, and its
committed label goes back to unknown. (Before issue 20 such atoms were left out, and a
crossover whose old motif faded through ``uncertain`` was reported with no atoms lost.)

A crossover does not flip every atom on the same frame: the old motif's atoms may go
``remove`` a frame before the new motif's go ``keep``. So the first confirmed flip *opens* a
change, which collects the flips confirmed on the next frames while any atom still has a run
in progress, for at most ``persist`` more frames; then it is reported once, dated to the
first frame that showed any of its flips:

a :class:`~motex_stream.stream.live.analyzer_protocol.KeepSetChange` (``frame``,
``atoms_gained``, ``atoms_lost``, ``confidence``).

``confidence`` is the mean, over the flipped atoms and the ``persist`` frames that confirmed
each flip, of the probability that the atom's value lies on the side of 0 its new label says.
It inverts the interval exactly as it was built: the half-width is ``q · sd`` with ``q`` the
quantile of Student's t at the atom's degrees of freedom (``df``, as the analyzer computed
them; the normal quantile when there are none), so ``sd`` and then ``P = F(|value| / sd)``
come from the same distribution as the label.

The detector's state survives a restart of the service (:meth:`KeepSetChangeDetector.state`,
:meth:`KeepSetChangeDetector.from_state`; the analyzer writes it after every frame): a change
in progress when the service stops is reported when the frames after the restart confirm it,
dated as it would have been. The frame a restart analyses a second time (its message may not
have gone out) gives the same answer as the first time, and the state does not count it twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy.stats import norm
from scipy.stats import t as student_t

from motex_stream.explain.confidence import KEEP, REMOVE
from motex_stream.stream.live.analyzer_protocol import AtomValues, KeepSetChange


@dataclass
class _Track:
    """One atom: its committed label and the run of an opposite confident label, if any."""

    state: str | None = None  # keep / remove; None until a label has held persist frames
    run_label: str | None = None
    run_start: int = 0
    probs: list[float] = field(default_factory=list)
    off_keep: int = 0  # a committed keep atom: consecutive frames without a keep label

    def reset_run(self) -> None:
        self.run_label, self.probs = None, []


@dataclass
class _OpenChange:
    """A change whose first flip is confirmed, still collecting the flips that follow it."""

    first_frame: int
    gained: set[int] = field(default_factory=set)
    lost: set[int] = field(default_factory=set)
    probs: list[float] = field(default_factory=list)
    frames_open: int = 0


@dataclass
class KeepSetChangeDetector:
    """Per-atom persistence detector; feed it one frame's contributions at a time."""

    persist: int = 3
    level: float = 0.9
    _tracks: dict[int, _Track] = field(default_factory=dict)
    _open: _OpenChange | None = None
    _last_seq: int | None = None  # the frame fed last, and the change it completed
    _last_change: KeepSetChange | None = None

    def __post_init__(self) -> None:
        if self.persist < 1:
            raise ValueError(f"persist must be at least 1, got {self.persist}")

    @property
    def keep_set(self) -> frozenset[int]:
        """The committed keep atoms (what a change is measured against)."""
        return frozenset(a for a, t in self._tracks.items() if t.state == KEEP)

    def _side_probability(self, v: float, lo: float, hi: float, df: float | None) -> float:
        """P(value on the side of 0 its label says), from the value and the interval's
        half-width, with the distribution the interval was built from (t at ``df``, or
        normal). NaN (no value or no interval): 0.5."""
        if not (np.isfinite(v) and np.isfinite(lo) and np.isfinite(hi)) or hi <= lo:
            return 0.5
        dist = norm if df is None or not df < float("inf") else student_t(df)
        sd = (hi - lo) / (2.0 * float(dist.ppf(0.5 + self.level / 2.0)))
        return float(dist.cdf(abs(v) / sd))

    def update(
        self,
        seq: int,
        atoms: AtomValues,
        df: Sequence[float] | None = None,
    ) -> KeepSetChange | None:
        """The change this frame completes, else None. ``df``: each atom's degrees of freedom
        of its interval's t quantile, in the order of ``atoms`` (None: normal)."""
        seq = int(seq)
        if seq == self._last_seq:  # the same frame again (analysed anew after a restart)
            return self._last_change
        if self._last_seq is not None and seq < self._last_seq:  # the run is played again
            self._tracks.clear()
            self._open = None
        self._last_seq = seq
        self._last_change = self._update(seq, atoms, df)
        return self._last_change

    def _update(
        self, seq: int, atoms: AtomValues, df: Sequence[float] | None
    ) -> KeepSetChange | None:
        flips: list[tuple[int, str, int, list[float]]] = []  # atom, new label, start, probs
        settled_keep: list[int] = []  # atoms without a committed label settling into keep
        nan = np.full(len(atoms), np.nan)
        low, high = atoms.interval if atoms.interval is not None else (nan, nan)
        for k in range(len(atoms)):
            atom = int(atoms.atom[k])
            track = self._tracks.setdefault(atom, _Track())
            label = None if atoms.label is None else atoms.label[k]
            if track.state == KEEP and label != KEEP:
                track.off_keep += 1
            else:
                track.off_keep = 0
            if label not in (KEEP, REMOVE) or label == track.state:
                track.reset_run()
                continue
            if label != track.run_label:
                track.run_label, track.run_start, track.probs = label, seq, []
            track.probs.append(
                self._side_probability(
                    atoms.value[k], low[k], high[k], None if df is None else df[k]
                )
            )
            if len(track.probs) < self.persist:
                continue
            if track.state is None:
                if label == KEEP:
                    settled_keep.append(atom)
            else:
                flips.append((atom, label, track.run_start, list(track.probs)))
            track.state = label
            track.off_keep = 0
            track.reset_run()

        if flips and self._open is None:
            self._open = _OpenChange(first_frame=min(start for _, _, start, _ in flips))
        if self._open is None:
            return None
        change = self._open
        for atom, label, start, probs in flips:
            gone, into = (change.lost, change.gained)
            if label == REMOVE:
                gone, into = into, gone
            if atom in gone:  # flipped back within the same change: no net change
                gone.discard(atom)
            else:
                into.add(atom)
            change.first_frame = min(change.first_frame, start)
            change.probs.extend(probs)
        for atom in settled_keep:  # back to keep after fading out within this change: no net
            if atom in change.lost:
                change.lost.discard(atom)
            else:
                change.gained.add(atom)
        for atom, t in self._tracks.items():  # keep atoms that faded out without a flip
            if t.state == KEEP and t.off_keep >= self.persist:
                change.lost.add(atom)
                change.gained.discard(atom)
                t.state, t.off_keep = None, 0
        pending = any(
            (t.run_label is not None and (t.state is not None or t.run_label == KEEP))
            or (t.state == KEEP and t.off_keep > 0)
            for t in self._tracks.values()
        )
        if pending and change.frames_open < self.persist:
            change.frames_open += 1
            return None
        self._open = None
        if not change.gained and not change.lost:  # flips that undid each other
            return None
        return KeepSetChange(
            frame=change.first_frame,
            atoms_gained=tuple(sorted(change.gained)),
            atoms_lost=tuple(sorted(change.lost)),
            confidence=round(sum(change.probs) / max(len(change.probs), 1), 4),
        )

    def state(self) -> dict[str, Any]:
        """Everything the detector has learned, as JSON-ready data (see :meth:`from_state`)."""
        return {
            "persist": self.persist,
            "level": self.level,
            "tracks": {str(a): asdict(t) for a, t in self._tracks.items()},
            "open": None if self._open is None else _open_state(self._open),
            "last_seq": self._last_seq,
            "last_change": None if self._last_change is None else self._last_change.to_json(),
        }

    @classmethod
    def from_state(cls, data: dict[str, Any]) -> KeepSetChangeDetector:
        """A detector that goes on where the one that wrote ``data`` stopped."""
        det = cls(persist=int(data["persist"]), level=float(data["level"]))
        det._tracks = {int(a): _Track(**t) for a, t in data["tracks"].items()}
        if data["open"] is not None:
            o = data["open"]
            det._open = _OpenChange(
                first_frame=int(o["first_frame"]),
                gained=set(o["gained"]),
                lost=set(o["lost"]),
                probs=list(o["probs"]),
                frames_open=int(o["frames_open"]),
            )
        det._last_seq = data["last_seq"]
        last = data["last_change"]
        det._last_change = None if last is None else KeepSetChange.from_json(last)
        return det


def _open_state(change: _OpenChange) -> dict[str, Any]:
    return {
        "first_frame": change.first_frame,
        "gained": sorted(change.gained),
        "lost": sorted(change.lost),
        "probs": change.probs,
        "frames_open": change.frames_open,
    }
