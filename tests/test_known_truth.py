"""A known-truth case where the answer is not the centre of the model (issue 21).

One α-Keggin unit (12 W + its O) of the 48-W crystal model 110457 — the unit farther from
the model's centroid — is the truth; the data are its PDF, strained 0.5 %, jittered 0.02 Å,
Biso 0.5 (the fit assumes 0.4) and 1 % noise (``benchmarks/bench_known_truth.py`` builds it).
The data prefer the truth (it is a local optimum of single moves, far below the centrality
motif). The surrogate's top 12 and the 12 most central W both miss it; the refinement by
direct fits finds it exactly, O atoms following the W by the catalogue's bonding rule.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from motex_stream.analysis import steps
from motex_stream.analysis.settings import ModelSettings

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():  # the benchmark script is the one place the family is defined
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import bench_known_truth
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return bench_known_truth


def test_refinement_recovers_an_off_centre_keggin_unit_that_shap_and_centrality_miss(
    bench, tmp_path: Path
) -> None:
    case = bench.keggin_case(bench.Perturbation(strain=0.005, jitter=0.02, noise=0.01))
    case = replace(case, perturbation=replace(case.perturbation, calculator="realspace"))
    xyz, gr = bench.write_case(case, tmp_path, seed=0)
    settings = ModelSettings(
        starting_model=xyz,
        qmin=0.7,
        qmax=20.0,
        catalogue_size=1000,
        search_calls=2,
        cv_folds=2,
        refine_fits=100_000,
        refine_starts=4,
    )
    data = steps.load_fit_data(gr, settings)
    model = steps.load_model(data.settings)
    masks = steps.make_catalogue(model, data.settings)
    engine = steps.prepare_engine(model, data.settings, data.r)
    fits = steps.fit_masks(engine, masks, data.g, "isotropic")
    trained = steps.train_surrogate(masks, fits.rwp, data.settings)
    _, contributions = steps.explain(trained, masks)

    truths = case.all_truths()  # the two W12 units fit alike: either is the answer
    assert len(truths) == 2

    def found(chosen: np.ndarray) -> int:
        return max(int((chosen & t).sum()) for t in truths)

    w = model.positions[model.permutable]
    central = np.zeros(len(w), dtype=bool)
    central[np.argsort(np.linalg.norm(w - w.mean(axis=0), axis=1), kind="stable")[:12]] = True
    shap_top = np.zeros(len(w), dtype=bool)
    shap_top[contributions.ranking()[:12]] = True

    refined = steps.refine_motif(
        engine, data.g, masks, fits.rwp, contributions, None, data.settings, positions=w
    )
    assert refined is not None
    truth_rwp = steps.fit_masks(engine, case.truth[None], data.g, "isotropic").rwp[0]
    assert refined.rwp == pytest.approx(truth_rwp, abs=1e-6)  # the truth or its twin unit
    assert found(refined.mask) == 12 and refined.mask.sum() == 12
    assert found(central) <= 6 and found(shap_top) <= 9  # measured: 5 and 7 (seed 0)
    # direct evidence: every refined atom helps the fit, every other one hurts
    assert (refined.keep_effect[refined.mask] < 0).all()
    assert (refined.keep_effect[~refined.mask] > 0).all()
    assert refined.n_fits <= 100_000 + len(w)


# --- the generated family (issue 21), its two cheapest members ---------------------------
# The generated known-truth family (issue 21), its two cheapest members: an off-centre hcp Co
# cut (19 of 57 atoms, 0.5 % strain, 1 % noise) and an off-centre Mg13 cut of a rock-salt MgO
# cluster with the O bonded to it (two elements, 2 % noise; simulated with the Debye calculator,
# not the engine's real-space kernels), both built by
# ``benchmarks/bench_known_truth.py`` (its ``--quick`` mode). On both the data prefer the
# truth (it is a local optimum of single moves and fits better than the most central atoms),
# the k most central atoms find about half of it, and the refinement by direct fits must return
# the truth itself (or a congruent copy of it: the same pair distances, which the PDF cannot
# tell apart), every atom, no extra one.


@pytest.mark.parametrize(
    ("index", "calculator"), [(0, "realspace"), (1, "debye")], ids=["hcp-Co", "MgO-debye"]
)
def test_refinement_recovers_the_off_centre_truth_exactly_and_beats_centrality(
    bench, index: int, calculator: str, tmp_path: Path
) -> None:
    case = bench.quick_family()[index]
    case = replace(case, perturbation=replace(case.perturbation, calculator=calculator))
    res, gr, settings = bench.analyse_case(case, 0, bench.QUICK, tmp_path)
    truths = case.all_truths()
    k = int(case.truth.sum())
    model = res.model
    pos = model.positions[model.permutable]
    dist = np.linalg.norm(pos - pos.mean(axis=0), axis=1)
    central = np.zeros(len(dist), dtype=bool)
    central[np.argsort(dist, kind="stable")[:k]] = True

    def found(chosen: np.ndarray) -> int:
        return max(int((chosen & t).sum()) for t in truths)

    data = steps.load_fit_data(gr, settings)
    engine = steps.prepare_engine(model, data.settings, data.r)
    truth_rwp, central_rwp = steps.fit_masks(
        engine, np.stack([case.truth, central]), data.g, "isotropic"
    ).rwp
    assert truth_rwp < central_rwp  # the data prefer the truth

    refined = res.refinement
    assert refined is not None
    # the truth itself, or a congruent copy of it elsewhere in the model: the same pair
    # distances, so the same PDF (on hcp the refinement returns such a copy)
    assert bench.same_pdf(model, refined.mask, case.truth), (found(refined.mask), k)
    assert refined.rwp == pytest.approx(truth_rwp, abs=1e-7)
    # the naive baseline finds about half (measured: 10/19 hcp, 6/13 MgO): all k against at
    # most 0.6 k
    assert found(central) <= 0.6 * k
    # direct evidence at the refined motif: every member helps, every other atom hurts
    assert (refined.keep_effect[refined.mask] < 0).all()
    assert (refined.keep_effect[~refined.mask] > 0).all()
    # labels hold against the truth the refinement returned: no keep outside it, no remove
    # inside it, and some keep. Before the toggles' signs were resolved one-sided (the check
    # used the two-sided test) MgO-debye had 1 keep outside it (of 5 keeps)
    labels = np.array(res.intervals.label)
    assert not ((labels == "keep") & ~refined.mask).any()
    assert not ((labels == "remove") & refined.mask).any()
    assert (labels == "keep").any()
