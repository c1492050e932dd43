"""The paper's published results, reproduced end to end (slow: full 10,000-motif analyses)."""

from __future__ import annotations

import numpy as np
import pytest

from motex_stream.analysis.pipeline import run_analysis
from motex_stream.analysis.settings import ModelSettings
from motex_stream.structure import load_starting_model
from motex_stream.structure.units import mislabelled, permutable_units
from tests.conftest import KEGGIN

pytestmark = pytest.mark.slow
ODD_W = list(range(1, 24, 2))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_keggin_109725_top12_are_the_odd_w(keggin_gr, seed):
    """Paper: the 12 most negative W of 109725 are W1, W3, ..., W23 (one α-Keggin unit)."""
    res = run_analysis(
        keggin_gr,
        ModelSettings(starting_model=KEGGIN / "109725.xyz", seed=seed, qmax=20.0),
    )
    top = res.atom_numbers()[res.contributions.ranking()[:12]]
    assert sorted(top.tolist()) == ODD_W
    assert res.test_mae < 0.03
    # the best motif of the catalogue is Keggin-like: it keeps mostly odd W
    best = res.masks[res.best]
    assert best[0::2].sum() >= 10


@pytest.mark.parametrize(
    ("name", "max_bad"),
    # measured with seed 0 and 10,000 motifs: 1, 2 and 0 mislabelled (the paper allowed 2)
    [("110457", 2), ("166877", 2), ("ABOCIE_real_111sc", 2)],
)
def test_larger_models_top24_form_keggin_units(keggin_gr, name, max_bad):
    model = load_starting_model(KEGGIN / f"{name}.xyz", ["W"], 2.5)
    units = [u for u in permutable_units(model, 3.9) if len(u) == 12]
    assert len(units) == 2, "each larger model holds exactly two complete W12 units"
    res = run_analysis(
        keggin_gr,
        ModelSettings(starting_model=KEGGIN / f"{name}.xyz", qmax=20.0),
        model=model,
    )
    assert mislabelled(res.contributions.ranking()[:24], units) <= max_bad


def test_c60_central_ball_is_found(tmp_path):
    """Paper Example 1: the 60 most negative atoms of a crowded C60 cell are the single ball."""
    from motex_stream.analysis.c60 import c60_experiment

    found, n_atoms, _ = c60_experiment(tmp_path, catalogue=20_000, seed=0)
    assert 125 <= n_atoms <= 150
    assert found >= 58


def test_mislabelled_counts_atoms_outside_whole_units():
    units = [np.arange(0, 12), np.arange(12, 24), np.arange(24, 30)]
    assert mislabelled(np.arange(0, 24), units) == 0
    assert mislabelled(np.r_[np.arange(0, 23), 25], units) == 1
