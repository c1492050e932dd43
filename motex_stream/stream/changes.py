"""Change detection on the live stream: when the set of ``keep`` atoms changes for good.

One noisy frame must not raise a change, so a new keep set (the atoms whose interval lies
below 0) is only *adopted* once it has been seen on ``persist`` consecutive frames. The first
keep set of a model is the baseline and raises nothing. When a new set is adopted the change
is reported once, dated to the first frame that showed it:

``{"frame": seq, "atoms_gained": [...], "atoms_lost": [...], "confidence": c}``

``confidence`` is the mean, over the atoms that changed and the ``persist`` frames that
confirmed the change, of the normal probability that the atom's value lies on the side of 0
its new label says (from the value and the interval's half-width at the interval's level).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any


@dataclass
class KeepSetChangeDetector:
    """Persistence detector of the keep set; feed it one frame's contributions at a time."""

    persist: int = 3
    level: float = 0.9
    baseline: frozenset[int] | None = None
    _candidate: frozenset[int] | None = None
    _first_seq: int = 0
    _support: list[dict[int, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.persist < 1:
            raise ValueError(f"persist must be at least 1, got {self.persist}")
        self._z = NormalDist().inv_cdf(0.5 + self.level / 2.0)

    def _side_probability(self, c: dict[str, Any]) -> float:
        """P(value on the side of 0 its label says), from value and interval half-width."""
        v, lo, hi = c.get("value"), c.get("ci_low"), c.get("ci_high")
        if v is None or lo is None or hi is None or hi <= lo:
            return 0.5
        sd = (hi - lo) / (2.0 * self._z)
        return NormalDist().cdf(abs(v) / sd)

    def update(self, seq: int, contributions: list[dict[str, Any]]) -> dict[str, Any] | None:
        """The change this frame confirms, else None."""
        keep = frozenset(int(c["atom"]) for c in contributions if c.get("label") == "keep")
        probs = {int(c["atom"]): self._side_probability(c) for c in contributions}
        if self.baseline is None:
            self.baseline = keep
            return None
        if keep == self.baseline:
            self._candidate, self._support = None, []
            return None
        if keep != self._candidate:
            self._candidate, self._first_seq, self._support = keep, int(seq), []
        self._support.append(probs)
        if len(self._support) < self.persist:
            return None
        gained = sorted(keep - self.baseline)
        lost = sorted(self.baseline - keep)
        changed = gained + lost
        confidence = sum(p[a] for p in self._support for a in changed) / (
            len(changed) * len(self._support)
        )
        change = {
            "frame": self._first_seq,
            "atoms_gained": gained,
            "atoms_lost": lost,
            "confidence": round(confidence, 4),
        }
        self.baseline, self._candidate, self._support = keep, None, []
        return change
