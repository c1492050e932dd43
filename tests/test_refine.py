"""Motif refinement by direct fits (issue 21): the descent, its budget, toggles and labels."""

from __future__ import annotations

import numpy as np
import pytest

from motex_stream.explain.contributions import AtomContributions
from motex_stream.explain.refine import (
    PAIR_POOL,
    PATIENCE,
    checked_labels,
    compact_starts,
    descend,
    direct_labels,
    independent_points,
    neighbours,
    refine_motif,
    refinement,
    refinement_starts,
    toggle_effects,
    veto_labels,
    with_labels,
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
    names = [r.name for r in ref.runs]
    assert names[:2] == ["a", "b"]  # the duplicate start is dropped
    assert all(n.startswith("kick") for n in names[2:]) and len(names) <= 2 + PATIENCE
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


def test_a_toggle_against_a_label_needs_its_sign_resolved_one_sided() -> None:
    """The check asks whether the data put the atom on the other side: a one-sided question.
    The MgO case of the family (Debye data, the truth recovered exactly, Rwp 0.0961): two keep
    atoms outside the truth add 0.00245 each, |t| = 1.63 on 53.5 independent points: not
    resolved two-sided at 90 % (1.68), resolved one-sided (1.30). 109725's W23 (outside the
    refined motif at Rwp 0.476, +0.0003, |t| = 0.25) is resolved by neither."""
    n = 8.4 * 20.0 / np.pi
    effect = np.array([0.00245, -0.00245, 0.0003, 0.0])
    assert direct_labels(effect[:2], 0.0961, n, 0.9) == ["uncertain"] * 2
    assert veto_labels(effect[:2], 0.0961, n, 0.9) == ["remove", "keep"]
    assert veto_labels(effect[2:], 0.4762, n, 0.9) == ["uncertain"] * 2
    # one-sided at 90 % is two-sided at 80 %
    assert veto_labels(effect, 0.0961, n, 0.9) == direct_labels(effect, 0.0961, n, 0.8)


def test_with_labels_withdraws_a_keep_the_toggle_contradicts_one_sided() -> None:
    """Before the one-sided check (two-sided F test, the toggles' own labels) the MgO false
    keeps stayed ``keep``; W23-like weak toggles still leave the interval's label. ``analyze``
    takes the checked labels as they are (``steps.label_with_refinement``)."""
    from motex_stream.analysis.settings import ModelSettings
    from motex_stream.analysis.steps import label_with_refinement
    from motex_stream.explain.confidence import ContributionIntervals
    from motex_stream.explain.refine import RefinedMotif
    from tests.conftest import KEGGIN

    mask = np.array([True, True, False, False, False])
    effect = np.array([-0.02, -0.0003, 0.00245, 0.0003, 0.02])
    zeros = np.zeros(5)
    ci = ContributionIntervals(
        low=zeros,
        high=zeros,
        label=["keep", "keep", "keep", "keep", "keep"],
        level=0.9,
        n_models=4,
        ensemble_sd=zeros,
        sampling_se=zeros,
    )
    settings = ModelSettings(starting_model=KEGGIN / "109725.xyz", qmax=20.0)
    n = independent_points(settings.rmin, settings.rmax, 20.0)
    refined = with_labels(
        RefinedMotif(mask=mask, rwp=0.0961, keep_effect=effect), ci.label, n, settings.ci_level
    )
    assert refined.checked_label == ["keep", "keep", "uncertain", "keep", "uncertain"]
    assert refined.interval_label == ci.label
    assert refined.direct_label == direct_labels(effect, 0.0961, n, settings.ci_level)
    assert label_with_refinement(ci, refined).label == refined.checked_label
    assert label_with_refinement(ci, None) is ci
    alone = with_labels(RefinedMotif(mask=mask, rwp=0.0961, keep_effect=effect), None, n, 0.9)
    assert alone.interval_label is None and alone.checked_label is None


def _contributions(value: np.ndarray, size_shap: dict[int, float]) -> AtomContributions:
    ones = np.ones(len(value))
    return AtomContributions(value, ones, ones, ones, ones, size_shap)


def test_refinement_starts_are_the_surrogates_and_the_catalogues_guesses() -> None:
    masks = np.zeros((3, N), dtype=bool)
    masks[0, :4] = True  # Rwp 0.2, 4 atoms
    masks[1, [2, 3, 7]] = True  # the best, 3 atoms
    masks[2, :6] = True
    value = np.linspace(-0.05, 0.06, N)  # the surrogate ranks atom 0 first
    starts = refinement_starts(
        masks,
        np.array([0.2, 0.1, np.nan]),
        _contributions(value, {5: -0.1, 2: 0.3}),
        ["keep"] * 2 + ["remove"] * (N - 2),
        2,
    )
    names = [name for name, _ in starts]
    assert names == [
        "surrogate top 3",
        "surrogate top 5",
        "negative contributions",
        "keep labels",
        "catalogue best 1",
        "catalogue best 2",
    ]
    assert np.flatnonzero(starts[0][1]).tolist() == [0, 1, 2]
    assert np.array_equal(starts[2][1], value < 0)
    assert np.flatnonzero(starts[3][1]).tolist() == [0, 1]
    assert np.array_equal(starts[4][1], masks[1]) and np.array_equal(starts[5][1], masks[0])
    assert "keep labels" not in [
        n
        for n, _ in refinement_starts(
            masks, np.array([0.2, 0.1, 0.3]), _contributions(value, {}), None, 1
        )
    ]


def test_refinement_is_the_starts_the_descent_and_the_labels_in_one_call() -> None:
    """``refinement`` = the compact cuts, then :func:`refinement_starts`, descended with the
    cuts' fits counted against the budget, then :func:`with_labels`: the same motif, fits and
    labels as those parts called in turn."""
    rng = np.random.default_rng(4)
    masks = rng.random((40, N)) < 0.4
    rwp = rwp_of(masks)
    contributions = _contributions(np.where(TRUTH, -0.01, 0.01), {4: -0.2})
    labels = ["keep" if t else "remove" for t in TRUTH]
    labels[0] = "keep"  # a false keep
    positions = np.c_[np.arange(N, dtype=float), np.zeros(N), np.zeros(N)]
    fit = Counter()
    out = refinement(
        fit,
        3_000,
        masks,
        rwp,
        contributions,
        labels,
        positions=positions,
        n_starts=2,
        n_independent=50.0,
        level=0.9,
        seed=5,
    )
    cuts, spent = compact_starts(positions, rwp_of, 2)
    starts = cuts + refinement_starts(masks, rwp, contributions, labels, 2)
    alone = with_labels(refine_motif(starts, rwp_of, 3_000, seed=5, spent=spent), labels, 50.0, 0.9)
    assert np.array_equal(out.mask, TRUTH) and np.array_equal(out.mask, alone.mask)
    assert out.rwp == alone.rwp and out.n_fits == alone.n_fits
    assert fit.n == out.n_fits  # the cuts', the descents' and the toggles' fits, all counted
    assert [r.name for r in out.runs] == [r.name for r in alone.runs]
    assert out.direct_label == alone.direct_label
    assert out.checked_label == alone.checked_label
    assert out.checked_label is not None and out.checked_label[0] == "uncertain"
    assert out.checked_label[1:] == labels[1:]


def test_compact_starts_are_the_best_distinct_cuts() -> None:
    """Cuts of a chain of 12 atoms: the truth-like cut {7, 8, 9, 10} is found, images of
    equal Rwp are given once, and the grid's fits are counted."""
    pos = np.zeros((N, 3))
    pos[:, 0] = np.arange(N)
    truth = np.zeros(N, dtype=bool)
    truth[7:11] = True

    def fit(m: np.ndarray) -> np.ndarray:
        m = np.atleast_2d(m)
        return 0.1 + 0.03 * (truth & ~m).sum(1) + 0.02 * (~truth & m).sum(1)

    starts, spent = compact_starts(pos, fit, 3)
    # every size 2..N-1 around every atom, then the unions of disjoint pooled cuts; no union
    # beats the truth's own cut, so no pair start
    assert (N - 2) * N < spent <= (N - 2) * N + PAIR_POOL * (PAIR_POOL - 1) // 2
    assert np.array_equal(starts[0][1], truth)
    rwp = [float(fit(s)[0]) for _, s in starts]
    assert rwp == sorted(rwp) and len(set(rwp)) == len(rwp) == 3


def test_two_separate_motifs_get_a_start_that_holds_both() -> None:
    """Two blocks of a chain, {1, 2, 3} and {8, 9, 10}: no single cut holds both; the pair
    start is exactly their union, and it is given after the cuts."""
    pos = np.zeros((N, 3))
    pos[:, 0] = np.arange(N)
    truth = np.zeros(N, dtype=bool)
    truth[[1, 2, 3, 8, 9, 10]] = True

    def fit(m: np.ndarray) -> np.ndarray:
        m = np.atleast_2d(m)
        return 0.1 + 0.03 * (truth & ~m).sum(1) + 0.02 * (~truth & m).sum(1)

    starts, _ = compact_starts(pos, fit, 3)
    pairs = [(name, m) for name, m in starts if name.startswith("pair of compact cuts")]
    assert [name for name, _ in starts[-len(pairs) :]] == [name for name, _ in pairs]
    assert np.array_equal(pairs[0][1], truth)
    assert all(not np.array_equal(m, truth) for _, m in starts[: -len(pairs)])
    # like the cuts, up to n_best unions, one per distinct Rwp, each better than every cut
    rwp = [float(fit(m)[0]) for _, m in pairs]
    best_cut = min(float(fit(m)[0]) for _, m in starts[: -len(pairs)])
    assert len(pairs) == 3 and rwp == sorted(set(rwp)) and max(rwp) < best_cut


def test_kicks_escape_a_local_optimum_of_single_moves() -> None:
    """A trap: atoms 0-7 are a local optimum of single moves (every add, remove and swap is
    worse) but atoms 8-15 fit far better; a kick of two swaps leaves the trap's basin and the
    descent from there reaches them, a lone descent does not."""
    target = np.arange(16) >= 8
    trap = ~target

    def fit(m: np.ndarray) -> np.ndarray:
        m = np.atleast_2d(m).astype(bool)
        far = (m != target).sum(1)
        return np.where((m == trap).all(1), 0.2, 0.02 * far)

    assert np.array_equal(descend(trap, fit, 10_000).end, trap)
    ref = refine_motif([("trap", trap)], fit, 10_000, seed=3)
    assert np.array_equal(ref.mask, target) and ref.rwp == 0.0
    assert ref.runs[0].end_rwp == 0.2 and ref.runs[1].name == "kick 1"
