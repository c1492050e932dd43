"""Motif refinement by direct fits (issue 21): the descent, its budget, toggles and labels."""

from __future__ import annotations

import numpy as np
import pytest

from motex_stream.explain.refine import (
    checked_labels,
    descend,
    direct_labels,
    neighbours,
    refine_motif,
    toggle_effects,
)

N = 12
TRUTH = np.zeros(N, dtype=bool)
TRUTH[[2, 3, 7, 9, 10]] = True


def rwp_of(masks: np.ndarray) -> np.ndarray:
    """A landscape whose only minimum is TRUTH: each missing true atom costs 0.03, each extra
    atom 0.02, and an interaction makes atom 9 worth more with 10 (not separable)."""
    m = np.atleast_2d(masks).astype(float)
    missing = (TRUTH & ~m.astype(bool)).sum(1)
    extra = (~TRUTH & m.astype(bool)).sum(1)
    return 0.1 + 0.03 * missing + 0.02 * extra - 0.01 * m[:, 9] * m[:, 10]


class Counter:
    def __init__(self) -> None:
        self.n = 0

    def __call__(self, masks: np.ndarray) -> np.ndarray:
        self.n += len(masks)
        return rwp_of(masks)


def test_neighbours_are_every_single_move() -> None:
    m = np.zeros(5, dtype=bool)
    m[[0, 3]] = True
    nb = neighbours(m)
    assert len(nb) == 2 + 3 + 2 * 3  # removals, additions, swaps
    changes = (nb != m).sum(1)
    assert set(changes[:5]) == {1} and set(changes[5:]) == {2}
    assert (nb[5:].sum(1) == 2).all()  # a swap keeps the size
    single = np.zeros(3, dtype=bool)
    single[1] = True
    assert neighbours(single).any(axis=1).all()  # the only atom is never removed


def test_descent_reaches_the_truth_from_a_wrong_start_and_counts_its_fits() -> None:
    start = np.zeros(N, dtype=bool)
    start[[0, 1, 2, 3, 4]] = True  # "most central": 2 of 5 right
    fit = Counter()
    run = descend(start, fit, budget=10_000)
    assert run.converged and np.array_equal(run.end, TRUTH)
    assert run.end_rwp == pytest.approx(0.09)
    assert run.n_fits == fit.n


def test_refinement_is_deterministic_within_budget_and_toggles_have_the_right_sign() -> None:
    starts = [("a", np.arange(N) < 5), ("b", np.arange(N) >= 7), ("a again", np.arange(N) < 5)]
    fit = Counter()
    ref = refine_motif(starts, fit, budget=2_000)
    assert np.array_equal(ref.mask, TRUTH)
    assert len(ref.runs) == 2  # the duplicate start is dropped
    assert ref.n_fits == fit.n and sum(r.n_fits for r in ref.runs) <= 2_000
    again = refine_motif(starts, Counter(), budget=2_000)
    assert np.array_equal(again.mask, ref.mask) and again.rwp == ref.rwp
    np.testing.assert_allclose(ref.keep_effect[TRUTH & (np.arange(N) < 9)], -0.03)
    np.testing.assert_allclose(ref.keep_effect[[9, 10]], -0.04)
    np.testing.assert_allclose(ref.keep_effect[~TRUTH], 0.02)


def test_a_budget_too_small_stops_before_the_optimum() -> None:
    start = np.arange(N) < 5
    run = descend(start, Counter(), budget=len(neighbours(start)) + 1)
    assert run.steps == 1 and not run.converged  # one step fitted, the next did not fit
    with pytest.raises(ValueError):
        refine_motif([("a", start)], Counter(), budget=0)


def test_toggle_of_the_only_atom_is_undefined() -> None:
    m = np.zeros(N, dtype=bool)
    m[2] = True
    eff = toggle_effects(m, float(rwp_of(m)[0]), rwp_of)
    assert np.isnan(eff[2]) and np.isfinite(np.delete(eff, 2)).all()


def test_direct_labels_need_a_resolved_change() -> None:
    # Rwp 0.1 on 50 independent points: a 0.02 change is resolved, 0.0005 is not
    lab = direct_labels(np.array([-0.02, 0.02, -0.0005, 0.0005, np.nan]), 0.1, 50.0, 0.9)
    assert lab == ["keep", "remove", "uncertain", "uncertain", "uncertain"]
    # a 0.01 change is resolved on a good fit (Rwp 0.1) but not on a poor one (Rwp 0.5)
    assert direct_labels(np.array([-0.01, 0.01]), 0.1, 50.0, 0.9) == ["keep", "remove"]
    assert direct_labels(np.array([-0.01, 0.01]), 0.5, 50.0, 0.9) == ["uncertain"] * 2


def test_checked_labels_withdraw_contradicted_confident_labels_only() -> None:
    shap = ["keep", "keep", "remove", "remove", "uncertain", "keep"]
    direct = ["keep", "remove", "keep", "uncertain", "keep", "uncertain"]
    assert checked_labels(shap, direct) == [
        "keep",
        "uncertain",
        "uncertain",
        "remove",
        "uncertain",
        "keep",
    ]
    strict = checked_labels(shap, direct, remove_needs_direct=True)
    assert strict[3] == "uncertain"
