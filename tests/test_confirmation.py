"""The confirming pass over keep atoms (issue 11): known answers, then the real engine."""

from __future__ import annotations

import numpy as np
import pytest

from motex_stream.analysis import steps
from motex_stream.analysis.settings import ModelSettings
from motex_stream.explain.confidence import (
    KEEP,
    REMOVE,
    UNCERTAIN,
    ContributionIntervals,
    interval,
)
from motex_stream.explain.confirmation import (
    apply_confirmation,
    demote,
    keep_confirmation,
    prune_to_centre,
)
from motex_stream.fitting.reference_fit import motif_pdf
from motex_stream.structure.units import permutable_units
from tests.conftest import KEGGIN


def additive_rwp(helpful: list[int], harmful: list[int]):
    """Rwp that each helpful atom lowers and each harmful one raises (a known answer)."""

    def fit(masks: np.ndarray) -> np.ndarray:
        m = np.asarray(masks, dtype=float)
        return 0.9 - 0.02 * m[:, helpful].sum(1) + 0.015 * m[:, harmful].sum(1)

    return fit


def test_prune_to_centre_drops_exactly_the_harmful_atoms() -> None:
    keep = np.zeros(10, dtype=bool)
    keep[[0, 1, 2, 3, 7, 8]] = True
    centre, rwp, n_fits = prune_to_centre(keep, additive_rwp([0, 1, 2, 3], [7, 8]))
    assert np.flatnonzero(centre).tolist() == [0, 1, 2, 3]
    assert rwp == pytest.approx(0.9 - 0.08)
    # one fit of the keep set, then one round per removed atom plus the round that stops
    assert n_fits == 1 + 6 + 5 + 4


def test_keep_confirmation_demotes_harmful_keeps_and_never_flips() -> None:
    label = [KEEP] * 4 + [UNCERTAIN, REMOVE, UNCERTAIN] + [KEEP, KEEP] + [REMOVE]
    conf = keep_confirmation(label, additive_rwp([0, 1, 2, 3], [7, 8]), 16, 0.9, seed=3)
    assert conf.atoms.tolist() == [0, 1, 2, 3, 7, 8]
    assert conf.demoted.tolist() == [7, 8]
    np.testing.assert_allclose(conf.effect, [-0.02] * 4 + [0.015] * 2)
    assert demote(label, conf) == [KEEP] * 4 + [UNCERTAIN, REMOVE, UNCERTAIN] + [
        UNCERTAIN,
        UNCERTAIN,
    ] + [REMOVE]
    # no keep atom at all: nothing to fit
    empty = keep_confirmation([REMOVE, UNCERTAIN], additive_rwp([0], [1]), 16, 0.9, seed=3)
    assert empty.n_fits == 0 and not len(empty.demoted)
    with pytest.raises(ValueError, match="2 contexts"):
        keep_confirmation(label, additive_rwp([0], [1]), 1, 0.9, seed=3)


def test_an_atom_with_no_effect_is_not_confirmed() -> None:
    """Zero effect gives an interval touching 0: not a confident keep."""
    conf = keep_confirmation([KEEP, KEEP, KEEP], additive_rwp([0, 1], []), 8, 0.9, seed=0)
    assert conf.demoted.tolist() == [2]


@pytest.fixture(scope="module")
def keggin_110457_on_one_unit():
    """The 48-W 110457 model with data simulated from one of its complete W12 units: the keep
    set holds that unit and atoms of an 8-W lacunary fragment (Keggin-like distances)."""
    settings = ModelSettings(starting_model=KEGGIN / "110457.xyz", qmax=20.0)
    data = steps.load_fit_data(KEGGIN / "DanMAX_AlphaKeggin.gr", settings)
    model = steps.load_model(data.settings)
    units = permutable_units(model, 3.9)
    unit = next(u for u in units if len(u) == 12)
    fragment = next(u for u in units if len(u) == 8)
    truth = np.zeros(model.n_permutable, dtype=bool)
    truth[unit] = True
    g = motif_pdf(model, truth, data.pdf, data.r)
    engine = steps.prepare_engine(model, data.settings, data.r)
    return engine, g, unit, fragment, data.settings


def test_fragment_keeps_are_demoted_on_the_real_engine(keggin_110457_on_one_unit) -> None:
    engine, g, unit, fragment, settings = keggin_110457_on_one_unit
    label = np.full(engine.model.n_permutable, REMOVE, dtype=object)
    label[unit] = KEEP
    label[fragment[:3]] = KEEP
    label[fragment[3:]] = UNCERTAIN
    conf = keep_confirmation(
        label.tolist(),
        lambda masks: steps.fit_masks(engine, masks, g, settings.zoom).rwp,
        32,
        0.9,
        seed=0,
    )
    assert sorted(conf.demoted.tolist()) == sorted(fragment[:3].tolist())
    assert np.flatnonzero(conf.centre).tolist() == sorted(unit.tolist())
    assert conf.centre_rwp < 1e-3  # the simulated data are that unit's PDF
    assert conf.n_fits == 1 + 15 + 14 + 13 + 12 + 2 * 15 * 32  # prune 3, then contexts


def test_confirm_keep_step_relabels_the_intervals(keggin_110457_on_one_unit) -> None:
    """steps.confirm_keep (offline, the measurement attached) and steps.confirmed_labels (a
    live frame's labels) run the one confirming pass; 0 contexts switches it off."""
    engine, g, unit, fragment, settings = keggin_110457_on_one_unit
    n = engine.model.n_permutable
    value = np.full(n, 0.01)
    value[unit] = -0.02
    value[fragment[:2]] = -0.01
    sd = np.full(n, 0.001)
    low, high, label = interval(value, sd, 0.9)
    ci = ContributionIntervals(low, high, label, 0.9, 0, np.zeros(n), sd)
    assert steps.confirm_keep(engine, g, ci, settings.updated(confirm_contexts=0)) is ci
    out = steps.confirm_keep(engine, g, ci, settings.updated(confirm_contexts=16))
    assert out.confirmation is not None
    assert np.flatnonzero(out.demoted()).tolist() == sorted(fragment[:2].tolist())
    assert [out.label[i] for i in fragment[:2]] == [UNCERTAIN, UNCERTAIN]
    assert all(out.label[i] == KEEP for i in unit)
    np.testing.assert_array_equal(out.low, ci.low)  # the value's interval is not touched
    assert apply_confirmation(ci, out.confirmation).label == out.label
    # same seed, same answer
    again = steps.confirm_keep(engine, g, ci, settings.updated(confirm_contexts=16))
    np.testing.assert_array_equal(again.confirmation.effect, out.confirmation.effect)
    # a live frame's one call gives the same labels from the labels alone
    on = settings.updated(confirm_contexts=16)
    assert steps.confirmed_labels(engine, g, list(ci.label), on) == list(out.label)
    off = settings.updated(confirm_contexts=0)
    assert steps.confirmed_labels(engine, g, list(ci.label), off) == list(ci.label)


def test_confirmation_is_seeded_by_the_settings_seed(keggin_110457_on_one_unit) -> None:
    engine, g, unit, fragment, settings = keggin_110457_on_one_unit
    label = [REMOVE] * engine.model.n_permutable
    for i in [*unit, *fragment[:1]]:
        label[i] = KEEP

    def fit(masks: np.ndarray) -> np.ndarray:
        return steps.fit_masks(engine, masks, g, settings.zoom).rwp

    a = keep_confirmation(label, fit, 8, 0.9, seed=1)
    b = keep_confirmation(label, fit, 8, 0.9, seed=2)
    assert not np.array_equal(a.effect, b.effect)  # other contexts
    assert a.demoted.tolist() == b.demoted.tolist() == fragment[:1].tolist()
