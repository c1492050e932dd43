"""The former numpy isotropic engine: the same zoom search as
:func:`motex_stream.fitting.isotropic.fit_isotropic`, done with numpy GEMMs.

Why it lives in tests/: the package fits with the compiled engine only; this one is the
reference the tests hold it to (in fp64, ``test_isotropic_engine.py``) and the in-run baseline
of ``benchmarks/bench_engine.py``.
"""

from __future__ import annotations

import numpy as np

from motex_stream.fitting.isotropic import DEN_NODES, lagrange_matrix, physical_scale
from motex_stream.fitting.restraint import ZoomRestraint
from motex_stream.fitting.results import FitResults
from motex_stream.pdf.batched import PreparedModel

#: Motifs per block of the former engine.
NUMPY_CHUNK = 1024


def grid_chi2(
    prepared: PreparedModel,
    class_kept: np.ndarray,
    beta: np.ndarray,
    g2: float,
    penalty: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Approximate χ² on the zoom grid, the exact numerators g·G_z and the interpolated
    norms ‖G_z‖² (each (m, Z))."""
    zooms = prepared.zooms
    nodes = np.unique(np.round(np.linspace(0, len(zooms) - 1, DEN_NODES)).astype(int))
    num = class_kept @ beta  # (m, Z)
    kernels = prepared.kernels_at(nodes).astype(class_kept.dtype, copy=False)
    e = (class_kept @ kernels).reshape(len(class_kept), len(nodes), -1)
    den = np.einsum("mnr,mnr->mn", e, e) @ lagrange_matrix(zooms[nodes], zooms).T
    with np.errstate(divide="ignore", invalid="ignore"):
        chi2 = np.where(den > 0, g2 - num**2 / den, g2) + penalty
    return chi2, num, den


def _exact_den(prepared: PreparedModel, class_kept: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """Exact ‖G_z‖² at grid zoom ``centre[i]`` for each motif i.

    Rows are sorted by zoom index once so that each group is one contiguous GEMM.
    """
    order = np.argsort(centre, kind="stable")
    sorted_kept = class_kept[order]
    sorted_centre = centre[order]
    bounds = np.flatnonzero(np.diff(sorted_centre)) + 1
    out = np.empty(len(centre), dtype=np.float64)
    for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, len(centre)], strict=True):
        kernels = prepared.kernels_at(np.array([sorted_centre[lo]]))
        e = sorted_kept[lo:hi] @ kernels.astype(class_kept.dtype, copy=False)
        out[order[lo:hi]] = np.einsum("mr,mr->m", e, e)
    return out


def fit_isotropic_numpy(
    prepared: PreparedModel,
    masks: np.ndarray,
    g: np.ndarray,
    restraint: ZoomRestraint | None = None,
    restrained_axes: int = 1,
    chunk: int = NUMPY_CHUNK,
    dtype: type[np.floating] = np.float32,
) -> FitResults:
    """The former numpy implementation of :func:`~motex_stream.fitting.isotropic.fit_isotropic`
    (same search); the in-run baseline of the engine benchmark.

    ``dtype=np.float64`` does every product in fp64 (on the same fp32-stored kernels): the
    exact-arithmetic reference the tests hold :func:`fit_isotropic` to. In fp32 (the former
    engine) the rounding of the per-class numerators and of 10^3-10^4-term sums moves Rwp by
    up to ~1e-6, and by up to 5e-5 where it tips a motif into a neighbouring zoom bracket
    (measured on the Ga2O3 2×2×2)."""
    restraint = restraint or ZoomRestraint()
    masks = np.atleast_2d(np.asarray(masks, dtype=bool))
    b, g2 = prepared.project_data(g)
    kernels = prepared.class_kernels.astype(dtype, copy=False)
    beta = (kernels @ b.astype(dtype)).T.astype(dtype)  # (classes, Z)
    zooms = prepared.zooms
    penalty = restrained_axes * restraint.penalty(zooms)
    n_zoom = len(zooms)
    rwp = np.empty(len(masks))
    scale_c = np.empty(len(masks))
    zoom = np.empty(len(masks))
    for start in range(0, len(masks), chunk):
        ck = prepared.class_kept(masks[start : start + chunk]).astype(dtype, copy=False)
        chi2, num, den_approx = grid_chi2(prepared, ck, beta, g2, penalty)
        centre = np.clip(np.argmin(chi2, axis=1), 1, n_zoom - 2)
        rows = np.arange(len(ck))
        # the interpolation error of ‖G_z‖² varies slowly from one grid zoom to the next, so
        # the exact norm at the bracket's centre corrects the whole bracket
        correction = _exact_den(prepared, ck, centre) - den_approx[rows, centre]
        for _ in range(6):  # walk each 3-point bracket until its middle is the minimum
            idx3 = centre[:, None] + np.array([-1, 0, 1])
            den3 = den_approx[rows[:, None], idx3] + correction[:, None]
            num3 = num[rows[:, None], idx3]
            with np.errstate(divide="ignore", invalid="ignore"):
                chi3 = np.where(den3 > 0, g2 - num3**2 / den3, g2) + penalty[idx3]
            step = np.argmin(chi3, axis=1) - 1
            moved = (step != 0) & (centre + step >= 1) & (centre + step <= n_zoom - 2)
            todo = np.flatnonzero(moved)
            if not len(todo):
                break
            centre[todo] += step[todo]
            correction[todo] = (
                _exact_den(prepared, ck[todo], centre[todo]) - den_approx[todo, centre[todo]]
            )
        # parabola through the bracket (grid is uniform): vertex offset in units of the step
        c_m, c_0, c_p = chi3[:, 0], chi3[:, 1], chi3[:, 2]
        curv = c_m - 2 * c_0 + c_p
        with np.errstate(divide="ignore", invalid="ignore"):
            off = np.where(curv > 0, 0.5 * (c_m - c_p) / curv, 0.0)
        off = np.clip(off, -1.0, 1.0)
        # quadratic interpolation of numerator and norm at the vertex
        w = np.stack([0.5 * off * (off - 1), 1 - off**2, 0.5 * off * (off + 1)], axis=1)
        num_v = (w * num3).sum(axis=1)
        den_v = (w * den3).sum(axis=1)
        empty = ~(den_v > 0)
        den_safe = np.where(empty, 1.0, den_v)
        res = np.where(empty, g2, g2 - num_v**2 / den_safe)
        sl = slice(start, start + len(ck))
        rwp[sl] = np.sqrt(np.clip(res, 0.0, None) / g2)
        scale_c[sl] = np.where(empty, 0.0, num_v / den_safe)
        step_z = zooms[1] - zooms[0]
        zoom[sl] = zooms[centre] + off * step_z
    return FitResults(
        rwp=rwp,
        scale=physical_scale(prepared, masks, scale_c),
        zoom=np.repeat(zoom[:, None], 3, axis=1),
        mode="isotropic",
    )
