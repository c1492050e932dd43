"""The PDF engine against real DiffPy-CMI output (golden curves) and against itself."""

from __future__ import annotations

import numpy as np
import pytest

from motex_stream.analysis.steps import default_pdf_settings
from motex_stream.pdf.batched import prepare_model
from motex_stream.pdf.debye import debye_pdf
from motex_stream.pdf.formfactors import xray_f0
from motex_stream.pdf.realspace import realspace_pdf

R_FIT = np.round(np.arange(160, 1001) * 0.01, 10)

VARIANTS = {
    "base": {},
    "qmin0": {"qmin": 0.0},
    "biso0.2": {"biso": 0.2},
    "delta2_2.0": {"delta2": 2.0},
    "qdamp0_qbroad0": {"qdamp": 0.0, "qbroad": 0.0},
}


def _golden_cases(golden, prefix):
    for key in golden.files:
        if key.startswith(prefix + "__"):
            _, cluster, variant = key.split("__")
            yield key, cluster, variant


@pytest.mark.parametrize("calculator", ["srfitgen", "debye"])
def test_every_golden_curve_matches_to_1e6(golden_pdf, calculator):
    func = realspace_pdf if calculator == "srfitgen" else debye_pdf
    cases = list(_golden_cases(golden_pdf, calculator))
    assert len(cases) == 10
    for key, cluster, variant in cases:
        settings = default_pdf_settings(golden_pdf["r"], **VARIANTS[variant])
        symbols = [str(s) for s in golden_pdf[f"elements__{cluster}"]]
        r, g = func(symbols, golden_pdf[f"xyz__{cluster}"], settings)
        ref = golden_pdf[key]
        np.testing.assert_allclose(r, golden_pdf["r"], atol=1e-12)
        err = np.max(np.abs(g - ref)) / np.max(np.abs(ref))
        assert err <= 1e-6, f"{key}: relative max error {err:.2e}"


def test_empty_and_single_atom_clusters_give_zero():
    settings = default_pdf_settings(R_FIT)
    assert not np.any(realspace_pdf([], np.zeros((0, 3)), settings)[1])
    assert not np.any(realspace_pdf(["W"], np.zeros((1, 3)), settings)[1])


def test_batched_class_kernels_reproduce_exact_pdf(prepared_109725, model_109725):
    """Motif G from pair classes equals the exact calculator (times DiffPy's normalisation)."""
    prep = prepared_109725
    rng = np.random.default_rng(5)
    iz = int(np.argmin(np.abs(prep.zooms - 1.0)))
    # G in the reduced coordinates → r space via the data map (exact on the data grid)
    for _ in range(4):
        mask = rng.random(24) < 0.5
        mask[0] = True
        c = prep.class_kept(mask[None])[0] @ prep.class_kernels[iz].astype(float)
        symbols, pos = model_109725.motif_positions(mask)
        _, g_exact = realspace_pdf(symbols, pos, prep.settings)
        f0 = np.array([xray_f0(s) for s in symbols])
        g_scaled = g_exact * len(symbols) * f0.mean() ** 2
        g_batched = prep.basis.data_to_c @ c
        assert np.max(np.abs(g_batched - g_scaled)) / np.max(np.abs(g_scaled)) < 1e-5


def test_reduced_basis_has_the_expected_rank(prepared_109725):
    # pdf-engine.md §3: effective rank ~60-70 on 1.6..10 Å with Qmax 20
    assert 55 <= prepared_109725.basis.rank <= 80


def test_project_data_rejects_wrong_grid(prepared_109725):
    with pytest.raises(ValueError, match="points"):
        prepared_109725.project_data(np.zeros(10))


def test_per_element_biso_changes_widths():
    settings = default_pdf_settings(R_FIT, biso={"W": 0.2, "O": 0.8})
    assert settings.biso_of("W") == 0.2 and settings.biso_of("O") == 0.8
    _, g_mixed = realspace_pdf(["W", "O"], np.array([[0, 0, 0], [1.9, 0, 0]]), settings)
    _, g_uniform = realspace_pdf(
        ["W", "O"], np.array([[0, 0, 0], [1.9, 0, 0]]), default_pdf_settings(R_FIT)
    )
    # W-W and O-O pairs get other widths than with 0.4 everywhere
    assert not np.allclose(g_mixed, g_uniform)


def test_invalid_settings_are_rejected():
    with pytest.raises(ValueError, match="qmin"):
        default_pdf_settings(R_FIT, qmin=25.0, qmax=20.0)
    with pytest.raises(ValueError, match="Biso"):
        default_pdf_settings(R_FIT, biso=-1.0)
    with pytest.raises(ValueError, match="no Biso given for element O"):
        default_pdf_settings(R_FIT, biso={"W": 0.3}).biso_of("O")


def test_prepare_model_other_system(tmp_path):
    """Any element with a form factor works: a small Ga-O cluster prepares and projects."""
    from motex_stream.structure import load_starting_model

    model_path = tmp_path / "gao.xyz"
    model_path.write_text("4\n\nGa 0 0 0\nO 1.9 0 0\nGa 3.8 0 0\nO 0 1.9 0\n")
    model = load_starting_model(model_path, ["Ga"], 2.2)
    r = np.round(np.arange(160, 1001) * 0.01, 10)
    prep = prepare_model(model, default_pdf_settings(r), r)
    assert prep.pairs.kinds == [("Ga", "Ga"), ("Ga", "O"), ("O", "O")]
    assert prep.class_kept(np.array([[1, 0]])).sum() > 0


def test_interpolation_equals_the_dense_matrix_it_replaced():
    """interpolate_rows gives what a dense numpy.interp matrix times the Q→r map gave."""
    import math

    from motex_stream.pdf.batched import interpolate_rows
    from motex_stream.pdf.grid import realspace_grid
    from motex_stream.pdf.realspace import damping

    r_data = np.linspace(1.55, 10.3, 777)  # off the calculation grid, past its ends
    settings = default_pdf_settings(R_FIT)
    grid = realspace_grid(settings, max_uii=0.01)
    r_out, q = grid.r_out, grid.q
    to_out = (
        (2 / math.pi) * grid.qstep * damping(r_out, settings)[:, None] * np.sin(np.outer(r_out, q))
    )
    # numpy.interp as a matrix: column j interpolates the j-th unit vector
    dense = np.stack([np.interp(r_data, r_out, e) for e in np.eye(r_out.size)], axis=1)
    expected = dense @ to_out
    got = interpolate_rows(r_data, r_out, to_out)
    scale = np.max(np.abs(expected))
    assert np.max(np.abs(got - expected)) <= 1e-15 * scale


@pytest.mark.parametrize("system", ["109725", "ga2o3"])
def test_tabulated_class_kernels_match_the_exact_ones(system, model_109725, golden_fits):
    """Class kernels interpolated from per-kind distance tables (the default) against every
    pair evaluated at every zoom (the former method): kernels within 1e-6 of the largest
    kernel at each zoom (measured 6e-8), Rwp within 1e-6 relative (measured 1.5e-7)."""
    from motex_stream.catalogue import random_catalogue
    from motex_stream.fitting.grfile import read_gr
    from motex_stream.fitting.isotropic import fit_isotropic
    from motex_stream.structure import load_starting_model
    from tests.conftest import DATA

    if system == "109725":
        curves, _ = golden_fits
        model, r, g = model_109725, curves["r"], curves["gobs"]
    else:
        data = read_gr(DATA / "ga2o3" / "amorphousFit_Gobs.dat").crop(1.6, 10.0)
        model = load_starting_model(
            DATA / "ga2o3" / "beta-Ga2O3_CollCode83645_1x1x1.xyz", ["Ga"], 2.2
        )
        r, g = data.r, data.g
    settings = default_pdf_settings(r)
    tab = prepare_model(model, settings, r)
    exact = prepare_model(model, settings, r, exact_kernels=True)
    np.testing.assert_array_equal(tab.class_sets, exact.class_sets)
    ref = exact.class_kernels.astype(float)
    peak = np.abs(ref).max(axis=(1, 2), keepdims=True)
    assert np.max(np.abs(tab.class_kernels - ref) / peak) <= 1e-6
    masks = random_catalogue(model.n_permutable, 2000, seed=11)
    a, b = fit_isotropic(tab, masks, g), fit_isotropic(exact, masks, g)
    assert np.max(np.abs(a.rwp - b.rwp) / b.rwp) <= 1e-6
