"""Batched isotropic-zoom fits: every motif of a catalogue against one G(r) in one pass.

Per motif the objective is χ²(s, z) = ‖g - s·G_z‖² + penalty(z). The scale has a closed
form, so χ²(z) = ‖g‖² - (g·G_z)²/‖G_z‖² + penalty(z). With pair-class kernels tabulated on a
zoom grid, g·G_z for every motif and grid zoom is one matrix product (classes × zooms). The
norm ‖G_z‖² needs the full reduced vector, so it is computed exactly at a few nodes,
interpolated across the grid to locate each motif's minimum, then computed exactly at
that grid zoom: the difference corrects the interpolated norms of the bracketing zooms (the
interpolation error is smooth), and a parabola through the three gives the zoom.
"""

from __future__ import annotations

import numpy as np

from motex_stream.fitting.restraint import ZoomRestraint
from motex_stream.fitting.results import FitResults
from motex_stream.pdf.batched import PreparedModel
from motex_stream.pdf.formfactors import xray_f0

DEN_NODES = 3
CHUNK = 1024


def _lagrange_matrix(x_nodes: np.ndarray, x: np.ndarray) -> np.ndarray:
    """(len(x), len(nodes)) weights of polynomial interpolation through the nodes."""
    t = (x - x.mean()) / (np.ptp(x) / 2 or 1.0)
    tn = (x_nodes - x.mean()) / (np.ptp(x) / 2 or 1.0)
    vander_nodes = np.vander(tn, len(tn), increasing=True)
    vander = np.vander(t, len(tn), increasing=True)
    return vander @ np.linalg.inv(vander_nodes)


def physical_scale(prep: PreparedModel, masks: np.ndarray, scale_c: np.ndarray) -> np.ndarray:
    """Convert the scale fitted against un-normalised kernels to DiffPy's ``mc``.

    DiffPy divides G by N<f(0)>² = (Σf)²/N over the motif's atoms; the kernels do not.
    """
    kept = prep.model.kept_atoms(masks).astype(float)
    f0 = np.array([xray_f0(s) for s in prep.model.symbols])
    n = kept.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        norm = np.where(n > 0, (kept @ f0) ** 2 / np.maximum(n, 1), 0.0)
    return scale_c * norm


def grid_chi2(
    prep: PreparedModel,
    class_kept: np.ndarray,
    beta: np.ndarray,
    g2: float,
    penalty: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Approximate χ² on the zoom grid, the exact numerators g·G_z and the interpolated
    norms ‖G_z‖² (each (m, Z))."""
    zooms = prep.zooms
    nodes = np.unique(np.round(np.linspace(0, len(zooms) - 1, DEN_NODES)).astype(int))
    num = class_kept @ beta  # (m, Z)
    e = (class_kept @ prep.kernels_at(nodes)).reshape(len(class_kept), len(nodes), -1)
    den = np.einsum("mnr,mnr->mn", e, e) @ _lagrange_matrix(zooms[nodes], zooms).T
    with np.errstate(divide="ignore", invalid="ignore"):
        chi2 = np.where(den > 0, g2 - num**2 / den, g2) + penalty
    return chi2, num, den


def _exact_den(prep: PreparedModel, class_kept: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """Exact ‖G_z‖² at grid zoom ``centre[i]`` for each motif i.

    Rows are sorted by zoom index once so that each group is one contiguous GEMM.
    """
    order = np.argsort(centre, kind="stable")
    sorted_kept = class_kept[order]
    sorted_centre = centre[order]
    bounds = np.flatnonzero(np.diff(sorted_centre)) + 1
    out = np.empty(len(centre), dtype=np.float64)
    for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, len(centre)], strict=True):
        e = sorted_kept[lo:hi] @ prep.kernels_at(np.array([sorted_centre[lo]]))
        out[order[lo:hi]] = np.einsum("mr,mr->m", e, e)
    return out


def fit_isotropic(
    prep: PreparedModel,
    masks: np.ndarray,
    g: np.ndarray,
    restraint: ZoomRestraint | None = None,
    restrained_axes: int = 1,
    chunk: int = CHUNK,
) -> FitResults:
    """Best scale and one zoom per motif; Rwp over the data points (penalty excluded)."""
    restraint = restraint or ZoomRestraint()
    masks = np.atleast_2d(np.asarray(masks, dtype=bool))
    b, g2 = prep.project_data(g)
    beta = (prep.class_kernels @ b.astype(np.float32)).T.astype(np.float32)  # (classes, Z)
    zooms = prep.zooms
    penalty = restrained_axes * restraint.penalty(zooms)
    n_zoom = len(zooms)
    rwp = np.empty(len(masks))
    scale_c = np.empty(len(masks))
    zoom = np.empty(len(masks))
    for start in range(0, len(masks), chunk):
        ck = prep.class_kept(masks[start : start + chunk])
        chi2, num, den_approx = grid_chi2(prep, ck, beta, g2, penalty)
        centre = np.clip(np.argmin(chi2, axis=1), 1, n_zoom - 2)
        rows = np.arange(len(ck))
        # the interpolation error of ‖G_z‖² varies slowly from one grid zoom to the next, so
        # the exact norm at the bracket's centre corrects the whole bracket
        correction = _exact_den(prep, ck, centre) - den_approx[rows, centre]
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
                _exact_den(prep, ck[todo], centre[todo]) - den_approx[todo, centre[todo]]
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
        scale=physical_scale(prep, masks, scale_c),
        zoom=np.repeat(zoom[:, None], 3, axis=1),
        mode="isotropic",
    )
