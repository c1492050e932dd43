"""Keep-set change detection: a persistent change is reported once; noise raises nothing."""

from __future__ import annotations

import numpy as np
import pytest

from motex_stream.explain.confidence import interval
from motex_stream.stream.changes import KeepSetChangeDetector


def frame(values: np.ndarray, sd: float = 0.002) -> list[dict]:
    low, high, label = interval(values, np.full(len(values), sd), 0.9)
    return [
        {"atom": i + 1, "value": float(v), "ci_low": float(lo), "ci_high": float(hi), "label": lab}
        for i, (v, lo, hi, lab) in enumerate(zip(values, low, high, label, strict=True))
    ]


def motif(keep: set[int], n: int = 8) -> np.ndarray:
    return np.array([-0.02 if i + 1 in keep else 0.02 for i in range(n)])


def test_crossover_is_reported_once_at_its_first_frame() -> None:
    rng = np.random.default_rng(0)
    det = KeepSetChangeDetector(persist=3)
    changes = []
    for seq in range(1, 41):
        keep = {1, 2, 3, 4} if seq < 20 else {1, 2, 5, 6}
        values = motif(keep) + rng.normal(0, 0.002, 8)
        change = det.update(seq, frame(values))
        if change:
            changes.append((seq, change))
    assert len(changes) == 1
    seq, change = changes[0]
    assert seq == 22 and change["frame"] == 20
    assert change["atoms_gained"] == [5, 6] and change["atoms_lost"] == [3, 4]
    assert 0.9 < change["confidence"] <= 1.0


def test_stationary_noise_and_single_flickers_raise_nothing() -> None:
    rng = np.random.default_rng(1)
    det = KeepSetChangeDetector(persist=3)
    for seq in range(1, 101):
        values = motif({1, 2, 3, 4}) + rng.normal(0, 0.002, 8)
        if seq % 17 == 0:  # one odd frame now and then
            values[4] = -0.02
        assert det.update(seq, frame(values)) is None


def test_persist_must_be_positive() -> None:
    with pytest.raises(ValueError, match="persist"):
        KeepSetChangeDetector(persist=0)
