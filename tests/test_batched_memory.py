"""Interpolating the engine's calculation grid onto the data points: memory linear in points.

The fit interpolates G from srfit's calculation grid to the data points. A dense
(data points × calculation points) matrix for that is 5 TiB on a 1e-5 Å grid; the engine
uses two neighbour indices and a weight per point instead.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from motex_stream.analysis.steps import default_pdf_settings
from motex_stream.pdf.batched import interpolate_rows, interpolation_weights, reduced_basis
from motex_stream.pdf.grid import realspace_grid

R_CALC = np.round(np.arange(3000) * 0.01, 10)


def _peak_bytes(func):  # type: ignore[no-untyped-def]
    tracemalloc.start()
    try:
        result = func()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_two_million_points_from_3000_calc_points_in_linear_memory() -> None:
    rng = np.random.default_rng(0)
    values = np.cumsum(rng.standard_normal((R_CALC.size, 3)), axis=0)
    r_data = np.linspace(-0.5, 30.5, 2_000_000)  # runs past both ends of the calc grid
    out, peak = _peak_bytes(lambda: interpolate_rows(r_data, R_CALC, values))
    assert out.shape == (r_data.size, 3)
    dense = r_data.size * R_CALC.size * 8  # 48 GB for the old interpolation matrix
    # the output itself is 48 MB; indices, weights and one block of temporaries come on top
    assert peak < 2.5 * out.nbytes, f"peak {peak / 2**20:.0f} MiB"
    assert peak < dense / 300
    for k in range(values.shape[1]):
        expected = np.interp(r_data, R_CALC, values[:, k])
        scale = np.max(np.abs(expected))
        np.testing.assert_allclose(out[:, k], expected, rtol=0, atol=1e-15 * scale)


def test_grid_points_and_ends_are_exact() -> None:
    values = np.stack([np.sin(R_CALC), R_CALC**2], axis=1)
    r_data = np.concatenate([[-1.0], R_CALC[::7], [45.0]])
    out = interpolate_rows(r_data, R_CALC, values)
    np.testing.assert_array_equal(out[1:-1], values[::7])  # on a grid point: that value
    np.testing.assert_array_equal(out[0], values[0])  # before the grid: first value
    np.testing.assert_array_equal(out[-1], values[-1])  # after it: last value
    idx, w = interpolation_weights(np.array([0.015]), R_CALC)
    assert idx.tolist() == [1] and w[0] == pytest.approx(0.5)


def test_shapes_are_checked() -> None:
    with pytest.raises(ValueError, match="calculation grid"):
        interpolate_rows(R_CALC, R_CALC, np.zeros((R_CALC.size - 1, 2)))
    with pytest.raises(ValueError, match="two calculation points"):
        interpolation_weights(R_CALC, R_CALC[:1])


def test_reduced_basis_on_a_fine_data_grid() -> None:
    """A 0.0005 Å grid over 1.6..10 Å: the dense matrix alone would be 2.3 GB."""
    r = np.linspace(1.6, 10.0, 16801)
    settings = default_pdf_settings(r)
    grid = realspace_grid(settings, max_uii=0.01)
    basis, peak = _peak_bytes(lambda: reduced_basis(grid, settings, r))
    dense = r.size * grid.r_out.size * 8
    assert dense > 2e9
    assert peak < 400 * 2**20, f"peak {peak / 2**20:.0f} MiB"  # measured: 76 MiB
    assert 55 <= basis.rank <= 80 and basis.data_to_c.shape == (r.size, basis.rank)
    # the data map is an orthonormal basis, as the closed-form fit needs
    gram = basis.data_to_c.T @ basis.data_to_c
    np.testing.assert_allclose(gram, np.eye(basis.rank), atol=1e-10)
