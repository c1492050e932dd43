"""The paper's published results, reproduced end to end (slow: full 10,000-motif analyses)."""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest

from motex_stream.analysis.pipeline import run_analysis
from motex_stream.analysis.result import AnalysisResult
from motex_stream.analysis.settings import ModelSettings
from motex_stream.structure import load_starting_model
from motex_stream.structure.units import mislabelled, permutable_units
from tests.conftest import KEGGIN

pytestmark = pytest.mark.slow
ODD_W = list(range(1, 24, 2))


@cache
def keggin_analysis(name: str, seed: int) -> AnalysisResult:
    """The default 10,000-motif analysis of one Keggin starting model (Qmax 20 as in the
    reference script), run once per (model, seed) and shared by the tests below.

    The seeds share no catalogue or fit: the seed draws the catalogue, so each seed's numbers
    (docs/results.md) are its own catalogue's, and the only seed-free step, preparing the PDF
    engine, was 5 s of 136 s on 166877 (the GBDT search and fit, the intervals and the motif
    refinement take the rest, all seeded)."""
    return run_analysis(
        KEGGIN / "DanMAX_AlphaKeggin.gr",
        ModelSettings(starting_model=KEGGIN / f"{name}.xyz", seed=seed, qmax=20.0),
    )


def complete_units(name: str) -> list[np.ndarray]:
    """The complete 12-W Keggin units of a starting model (permutable-atom indices)."""
    model = load_starting_model(KEGGIN / f"{name}.xyz", ["W"], 2.5)
    return [u for u in permutable_units(model, 3.9) if len(u) == 12]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_keggin_109725_top12_are_the_odd_w(seed):
    """Paper: the 12 most negative W of 109725 are W1, W3, ..., W23 (one α-Keggin unit)."""
    res = keggin_analysis("109725", seed)
    top = res.atom_numbers()[res.contributions.ranking()[:12]]
    assert sorted(top.tolist()) == ODD_W
    assert res.test_mae < 0.03
    # the best motif of the catalogue is Keggin-like: it keeps mostly odd W
    best = res.masks[res.best]
    assert best[0::2].sum() >= 10


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(
    ("name", "max_bad"),
    # measured with seeds 0, 1, 2 and 10,000 motifs: 1/1/2, 2/2/2 and 0/0/0 mislabelled
    # (the paper allowed 2)
    [("110457", 2), ("166877", 2), ("ABOCIE_real_111sc", 2)],
)
def test_larger_models_top24_form_keggin_units(name, max_bad, seed):
    units = complete_units(name)
    assert len(units) == 2, "each larger model holds exactly two complete W12 units"
    res = keggin_analysis(name, seed)
    assert mislabelled(res.contributions.ranking()[:24], units) <= max_bad


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("name", ["109725", "110457", "166877", "ABOCIE_real_111sc"])
def test_confident_labels_respect_the_keggin_units(name, seed):
    """Issue 11: no atom labelled keep outside the complete Keggin units and none labelled
    remove inside them (default settings: confirming pass on, no second pass); 109725 keeps
    exactly W1, W3, ..., W23. Uncertain atoms are allowed (counts in docs/results.md).

    Before the confirming pass (``confirm_contexts=0``) this failed on 110457 seeds 0, 2 (W16;
    W14, W16) and 166877 seeds 0-2 (5-13 atoms of the 9-W fragments labelled keep)."""
    res = keggin_analysis(name, seed)
    ci = res.intervals
    assert ci is not None
    inside = np.zeros(len(ci.label), dtype=bool)
    for unit in complete_units(name):
        inside[unit] = True
    labels = np.array(ci.label)
    numbers = res.atom_numbers()
    assert not numbers[(labels == "keep") & ~inside].tolist(), "keep outside the Keggin units"
    assert not numbers[(labels == "remove") & inside].tolist(), "remove inside a Keggin unit"
    if name == "109725":
        assert sorted(numbers[labels == "keep"].tolist()) == ODD_W


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
