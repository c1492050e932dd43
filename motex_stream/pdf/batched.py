"""The batched PDF engine: one starting model, thousands of motifs, matrix products.

Why this works: for the real-space calculator G is linear in the set of kept pairs, and the
per-structure normalisation cancels against the fitted scale. A pair is kept iff both of its
atoms are; an atom is kept iff its *keep set* (itself for a permutable atom, the bonded
permutable atoms for a dependent one) meets the mask. Pairs with the same two keep sets are
always kept together, so they are summed once into a *pair class*. A motif is then a 0/1
vector over classes and its G is that vector times a (classes × R) kernel matrix.

R is small because the fit only sees G on the data points, and a band-limited G restricted
to [rmin, rmax] has effective rank ~60-70 (pdf-engine.md §3). We take an SVD of the linear
map F(Q) → G(r_data) and keep the directions that carry signal; in those coordinates
‖G‖² = ‖c‖² and g·G = b·c, which is all a closed-form-scale fit needs.

Zoom (lattice scaling of the cluster) moves every pair distance, so the class kernels are
tabulated on a grid of isotropic zooms; the anisotropic mode instead interpolates per-pair
kernels from distance tables (see :class:`DistanceTables`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numba
import numpy as np
from scipy import sparse
from threadpoolctl import threadpool_limits

from motex_stream.pdf.formfactors import xray_f0
from motex_stream.pdf.grid import (
    FWHM_PER_SIGMA,
    HALF_BOUND_REL,
    RealSpaceGrid,
    pair_sigma,
    realspace_grid,
)
from motex_stream.pdf.realspace import cluster_pairs, damping, gaussian_windows
from motex_stream.pdf.settings import PDFSettings
from motex_stream.structure.starting_model import StartingModel

PAIR_CHUNK = 4096


@dataclass(frozen=True)
class ReducedBasis:
    """Coordinates in which the fit is exact: c = F @ q_to_c, b = g @ data_to_c."""

    q_to_c: np.ndarray  # (nk, R)
    data_to_c: np.ndarray  # (n_data, R)
    r_to_c: np.ndarray  # (exthi, R): RDF/r samples → c, i.e. dr·sin(Q r) @ q_to_c

    @property
    def rank(self) -> int:
        return self.q_to_c.shape[1]


INTERP_CHUNK = 65536  # data points per block: bounds the temporaries of interpolate_rows


def interpolation_weights(r_data: np.ndarray, r_calc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Left neighbour on ``r_calc`` and weight of each data point, as numpy.interp picks them.

    A value at ``r_data[i]`` is ``(1 - w[i]) * y[idx[i]] + w[i] * y[idx[i] + 1]``; points
    outside ``r_calc`` take the end values (w clipped to 0 or 1), as numpy.interp does.
    """
    r_data = np.asarray(r_data, dtype=float)
    r_calc = np.asarray(r_calc, dtype=float)
    m = len(r_calc)
    if m < 2:
        raise ValueError(f"interpolation needs at least two calculation points, got {m}")
    idx = np.clip(np.searchsorted(r_calc, r_data) - 1, 0, m - 2)
    w = np.clip((r_data - r_calc[idx]) / (r_calc[idx + 1] - r_calc[idx]), 0.0, 1.0)
    return idx, w


def interpolate_rows(r_data: np.ndarray, r_calc: np.ndarray, values: np.ndarray) -> np.ndarray:
    """numpy.interp of every column of ``values`` (len(r_calc), k) at ``r_data``: (n_data, k).

    srfit evaluates G on its calculation grid, then interpolates to the data points. Done
    with two neighbour indices and a weight per point, memory is linear in the number of
    points (a dense n_data × n_calc interpolation matrix needs terabytes on a 1e-5 Å grid).
    """
    values = np.asarray(values, dtype=float)
    if values.ndim != 2 or values.shape[0] != len(r_calc):
        raise ValueError(
            f"values must be ({len(r_calc)}, k) to match the calculation grid, got {values.shape}"
        )
    idx, w = interpolation_weights(r_data, r_calc)
    out = np.empty((len(idx), values.shape[1]))
    for start in range(0, len(idx), INTERP_CHUNK):
        sl = slice(start, start + INTERP_CHUNK)
        i, wc = idx[sl], w[sl, None]
        np.multiply(1 - wc, values[i], out=out[sl])
        out[sl] += wc * values[i + 1]
    return out


def reduced_basis(
    grid: RealSpaceGrid, settings: PDFSettings, r_data: np.ndarray, rank_tol: float = 1e-7
) -> ReducedBasis:
    """SVD of F(Q) → G(r_data); keep singular directions above rank_tol·σ_max."""
    r_out = grid.r_out
    q = grid.q
    to_out = (
        (2 / math.pi) * grid.qstep * damping(r_out, settings)[:, None] * np.sin(np.outer(r_out, q))
    )
    a = interpolate_rows(np.asarray(r_data, dtype=float), r_out, to_out)
    # one BLAS thread: the matrices are small (points × Q), and OpenBLAS's threaded SVD took
    # 3-4 s instead of milliseconds on a loaded 2-core machine (its threads spin-wait for
    # cores other processes hold); it also makes the basis independent of the thread count
    with threadpool_limits(1, user_api="blas"):
        u, s, vt = np.linalg.svd(a, full_matrices=False)
        keep = s > rank_tol * s[0]
        q_to_c = vt[keep].T * s[keep]
        r_all = np.arange(grid.exthi) * grid.rstep
        r_to_c = grid.rstep * np.sin(np.outer(r_all, q)) @ q_to_c
    return ReducedBasis(q_to_c=q_to_c, data_to_c=u[:, keep], r_to_c=r_to_c)


def pair_kernels(
    d: np.ndarray,
    sigma: np.ndarray,
    weight: np.ndarray,
    grid: RealSpaceGrid,
    basis: ReducedBasis,
) -> np.ndarray:
    """Reduced kernels (P, R) of single pairs: weight·(RDF/r contribution) in c coordinates.

    Pairs whose Gaussian lies well inside the RDF range use the closed form
    exp(-σ²Q²/2)·sin(Qd)/d (equal to the discrete sum to ~5e-7); pairs near the range ends,
    whose peaks DiffPy truncates, use the exact windowed sum.
    """
    out = np.zeros((len(d), basis.rank))
    q = grid.q
    bound = HALF_BOUND_REL * sigma * FWHM_PER_SIGMA
    lo_edge = max(grid.extlo, 1) * grid.rstep
    analytic = (d - bound - grid.rstep > lo_edge) & (
        d + bound + grid.rstep < (grid.exthi - 1) * grid.rstep
    )
    ia = np.flatnonzero(analytic)
    for start in range(0, len(ia), PAIR_CHUNK):
        sel = ia[start : start + PAIR_CHUNK]
        out[sel] = _analytic_q_kernels(d[sel], sigma[sel], weight[sel], q) @ basis.q_to_c
    idisc = np.flatnonzero(~analytic & (sigma > 0))
    for start in range(0, len(idisc), PAIR_CHUNK):
        sel = idisc[start : start + PAIR_CHUNK]
        jlo, y = gaussian_windows(d[sel], sigma[sel], grid)
        acc = _window_sums(np.ascontiguousarray(jlo), np.ascontiguousarray(y), basis.r_to_c)
        out[sel] = weight[sel, None] * acc
    return out


@numba.njit(parallel=True, cache=True)
def _window_sums(jlo, y, r_to_c):  # pragma: no cover - compiled
    """Σ_t y[p, t]·r_to_c[min(jlo[p] + t, last)] per pair: the windowed sum, t in order.

    The same additions in the same order as the former numpy loop over t (no fastmath), one
    pass per pair instead of one gathered (P, R) temporary per window point.
    """
    last = r_to_c.shape[0] - 1
    rank = r_to_c.shape[1]
    out = np.zeros((len(jlo), rank))
    for p in numba.prange(len(jlo)):
        for t in range(y.shape[1]):
            row = min(jlo[p] + t, last)
            w = y[p, t]
            for c in range(rank):
                out[p, c] += w * r_to_c[row, c]
    return out


@numba.njit(parallel=True, fastmath=True, cache=True)
def _analytic_q_kernels(d, sigma, weight, q):  # pragma: no cover - compiled
    """w·exp(-σ²Q²/2)·sin(Qd)/d for each pair and Q (the Fourier transform of a Gaussian)."""
    out = np.empty((len(d), len(q)))
    for p in numba.prange(len(d)):
        s2 = 0.5 * sigma[p] * sigma[p]
        wd = weight[p] / d[p]
        for k in range(len(q)):
            out[p, k] = wd * np.exp(-s2 * q[k] * q[k]) * np.sin(q[k] * d[p])
    return out


@dataclass
class PairSet:
    """Pairs of a starting model that some motif can keep, with what the kernels need."""

    a: np.ndarray  # atom indices (file order)
    b: np.ndarray
    d0: np.ndarray  # unzoomed distance
    delta2: np.ndarray  # (P, 3) squared Cartesian components, for anisotropic zoom
    kind: np.ndarray  # element-pair type id
    kinds: list[tuple[str, str]]
    weight: np.ndarray  # 2 f_a(0) f_b(0)
    msd: np.ndarray  # U_a + U_b
    pair_class: np.ndarray  # class id of each pair


@dataclass(frozen=True)
class Backend:
    """The numeric backend a prepared model's fits run on: ``numpy`` (the compiled CPU
    kernels) or ``torch`` (the gpu extra), and the torch device (``auto``, ``cpu``, ``cuda``...).

    Why a field of :class:`PreparedModel` and not a setting passed beside it: the settings are
    read once, at preparation, and every later fit of that model (locally, or a chunk on a Dask
    worker, which only ever sees the shipped copy) must run on the same backend.
    """

    name: Literal["numpy", "torch"] = "numpy"
    device: str = "auto"


@dataclass
class PreparedModel:
    """Everything the batched fits need for one starting model, settings and data grid."""

    model: StartingModel
    settings: PDFSettings
    r_data: np.ndarray
    grid: RealSpaceGrid
    basis: ReducedBasis
    pairs: PairSet
    keepsets: np.ndarray  # (n_sets, n_permutable) bool: which mask bits keep each set
    class_sets: np.ndarray  # (n_classes, 2) keep-set ids of each class
    zooms: np.ndarray  # isotropic zoom grid
    class_kernels: np.ndarray  # (n_zoom, n_classes, R) float32
    timings: dict[str, float] = field(default_factory=dict)
    _kernel_cache: dict[tuple[int, ...], np.ndarray] = field(default_factory=dict, repr=False)
    #: derived tables of the compiled fitting engines (built on first use, per model)
    engine_cache: dict[str, object] = field(default_factory=dict, repr=False)
    #: what its fits run on (:func:`motex_stream.fitting.dispatch.fit`); travels with every copy
    backend: Backend = Backend()

    def kernels_at(self, zoom_indices: np.ndarray) -> np.ndarray:
        """(n_classes, len(idx)·R) kernels of several grid zooms side by side, for one GEMM."""
        idx = np.asarray(zoom_indices)
        key = tuple(idx.tolist())
        cached = self._kernel_cache.get(key)
        if cached is None:
            cached = np.ascontiguousarray(
                self.class_kernels[idx].transpose(1, 0, 2).reshape(self.n_classes, -1)
            )
            if len(self._kernel_cache) < 4 * len(self.zooms):
                self._kernel_cache[key] = cached
        return cached

    @property
    def n_classes(self) -> int:
        return len(self.class_sets)

    def set_kept(self, masks: np.ndarray) -> np.ndarray:
        """(M, n_sets) float32: whether each keep set meets each mask."""
        m = np.asarray(masks, dtype=np.float32)
        return (m @ self.keepsets.T.astype(np.float32) > 0.5).astype(np.float32)

    def class_kept(self, masks: np.ndarray) -> np.ndarray:
        """(M, n_classes) float32 0/1: which pair classes each motif keeps."""
        s = np.ascontiguousarray(self.set_kept(masks).T)  # row gathers are the cheap ones
        return (s[self.class_sets[:, 0]] * s[self.class_sets[:, 1]]).T

    def project_data(self, g: np.ndarray) -> tuple[np.ndarray, float]:
        """Observed G on r_data → (b in c coordinates, ‖g‖²)."""
        g = np.asarray(g, dtype=float)
        if g.shape != self.r_data.shape:
            raise ValueError(f"G has {g.size} points but the fit grid has {self.r_data.size}")
        return g @ self.basis.data_to_c, float(g @ g)


def _keep_sets(model: StartingModel) -> tuple[np.ndarray, np.ndarray]:
    """Keep-set id per atom (-1: never kept) and the (n_sets, N) membership matrix."""
    sets: dict[tuple[int, ...], int] = {}
    atom_set = np.full(model.n_atoms, -1)
    for col, atom in enumerate(model.permutable):
        atom_set[atom] = sets.setdefault((col,), len(sets))
    for row, atom in enumerate(model.dependent):
        cols = tuple(np.flatnonzero(model.bonded[row]).tolist())
        if cols:
            atom_set[atom] = sets.setdefault(cols, len(sets))
    membership = np.zeros((len(sets), model.n_permutable), dtype=bool)
    for cols, sid in sets.items():
        membership[sid, list(cols)] = True
    return atom_set, membership


def default_zoom_grid(lo: float = 0.975, hi: float = 1.025, step: float = 0.001) -> np.ndarray:
    return np.round(np.arange(lo, hi + step / 2, step), 10)


def prepare_model(
    model: StartingModel,
    settings: PDFSettings,
    r_data: np.ndarray,
    zooms: np.ndarray | None = None,
    exact_kernels: bool = False,
    class_kernels: np.ndarray | None = None,
) -> PreparedModel:
    """Pair classes, reduced basis and class kernels on the zoom grid (done once per model).

    The class kernels come from per-kind distance tables (:func:`_class_kernels_tabulated`);
    ``exact_kernels=True`` evaluates every pair at every zoom instead (the former method, kept
    as the reference the tests hold the tables to). ``class_kernels``: the kernels an earlier
    call with the same arguments computed (a live state's saved tables, see
    ``stream.live.live_state``), used as they are: they are most of the preparation's time.
    """
    import time

    t0 = time.perf_counter()
    r_data = np.asarray(r_data, dtype=float)
    zooms = default_zoom_grid() if zooms is None else np.asarray(zooms, dtype=float)
    uiso = np.array([settings.uiso_of(s) for s in model.symbols])
    grid = realspace_grid(settings, max_uii=float(uiso.max()))
    basis = reduced_basis(grid, settings, r_data)
    atom_set, membership = _keep_sets(model)
    keepable = np.flatnonzero(atom_set >= 0)
    # pairs may move in and out of the calculator range as the zoom changes, so collect every
    # pair that any zoom on the grid can bring into range (with some slack for the aniso fit)
    zmin, zmax = float(zooms.min()) * 0.98, float(zooms.max()) * 1.02
    plist = cluster_pairs(model.positions[keepable], grid.pair_dmin / zmax, grid.pair_dmax / zmin)
    a, b = keepable[plist.i], keepable[plist.j]
    sa, sb = atom_set[a], atom_set[b]
    lo, hi = np.minimum(sa, sb), np.maximum(sa, sb)
    class_keys, pair_class = np.unique(np.stack([lo, hi], axis=1), axis=0, return_inverse=True)
    # element-pair kinds, as sorted symbol pairs in sorted order: with elements numbered in
    # sorted order, (smaller id, larger id) sorts as the symbol pairs do (no per-pair Python)
    elements = sorted(set(model.symbols))
    eid = np.array([elements.index(s) for s in model.symbols], dtype=np.int64)
    ea, eb = eid[a], eid[b]
    kind_keys, kind = np.unique(
        np.minimum(ea, eb) * len(elements) + np.maximum(ea, eb), return_inverse=True
    )
    kinds = [(elements[k // len(elements)], elements[k % len(elements)]) for k in kind_keys]
    kind = kind.ravel()
    f0 = np.array([xray_f0(s) for s in model.symbols])
    pairs = PairSet(
        a=a,
        b=b,
        d0=plist.distance,
        delta2=plist.delta**2,
        kind=kind,
        kinds=kinds,
        weight=2 * f0[a] * f0[b],
        msd=uiso[a] + uiso[b],
        pair_class=pair_class.ravel(),
    )
    t1 = time.perf_counter()
    if class_kernels is not None:
        kernels = np.asarray(class_kernels)
        expected = (len(zooms), len(class_keys), basis.rank)
        if kernels.shape != expected or kernels.dtype != np.float32:
            raise ValueError(
                f"class kernels {kernels.shape} {kernels.dtype}, the model needs {expected} float32"
            )
    elif exact_kernels or not _tabulation_applies(pairs, zooms):
        kernels = _class_kernels_exact(pairs, len(class_keys), zooms, grid, settings, basis)
    else:
        kernels = _class_kernels_tabulated(pairs, len(class_keys), zooms, grid, settings, basis)
    t2 = time.perf_counter()
    return PreparedModel(
        model=model,
        settings=settings,
        r_data=r_data,
        grid=grid,
        basis=basis,
        pairs=pairs,
        keepsets=membership,
        class_sets=class_keys,
        zooms=zooms,
        class_kernels=kernels,
        timings={"pairs": t1 - t0, "class_kernels": t2 - t1},
    )


#: Distance step (Å) of the per-kind kernel tables the class kernels are interpolated from.
#: Cubic (4-point) interpolation errs by ≤ 0.0234·h⁴·max|K⁗|, i.e. ~4e-9 of a kernel for
#: Q up to 20 Å⁻¹ and ~2e-8 up to 30 Å⁻¹: below the fp32 rounding of the stored kernels.
KERNEL_TABLE_STEP = 0.001


def _class_kernels_exact(
    pairs: PairSet,
    n_classes: int,
    zooms: np.ndarray,
    grid: RealSpaceGrid,
    settings: PDFSettings,
    basis: ReducedBasis,
) -> np.ndarray:
    """(n_zoom, n_classes, R) float32: every pair's kernel evaluated at every zoom, summed
    into its class. Exact, but it costs pairs × zooms kernel evaluations (10 s for the
    2.6·10^4 pairs of the Ga2O3 2×2×2); the reference for the tabulated kernels."""
    kernels = np.zeros((len(zooms), n_classes, basis.rank), dtype=np.float32)
    for iz, z in enumerate(zooms):
        d = z * pairs.d0
        inside = (d >= grid.pair_dmin) & (d <= grid.pair_dmax)
        sigma = pair_sigma(d[inside], pairs.msd[inside], settings)
        k = pair_kernels(d[inside], sigma, pairs.weight[inside], grid, basis)
        # summing pairs into classes is a sparse (classes × pairs) product
        cls = pairs.pair_class[inside]
        to_class = sparse.csr_matrix(
            (np.ones(len(cls)), (cls, np.arange(len(cls)))), shape=(n_classes, len(cls))
        )
        kernels[iz] = to_class @ k
    return kernels


def _tabulation_applies(pairs: PairSet, zooms: np.ndarray) -> bool:
    """Tables need one weight and one mean-square displacement per kind (true whenever those
    come from per-element f(0) and Uiso, as here) and pairs clear of d = 0 for the stencil."""
    if not len(pairs.d0):
        return False
    if float(pairs.d0.min()) * float(zooms.min()) <= 4 * KERNEL_TABLE_STEP:
        return False
    for kind in range(len(pairs.kinds)):
        sel = pairs.kind == kind
        if np.ptp(pairs.weight[sel]) != 0 or np.ptp(pairs.msd[sel]) != 0:
            return False
    return True


def _class_kernels_tabulated(
    pairs: PairSet,
    n_classes: int,
    zooms: np.ndarray,
    grid: RealSpaceGrid,
    settings: PDFSettings,
    basis: ReducedBasis,
    step: float = KERNEL_TABLE_STEP,
) -> np.ndarray:
    """The class kernels of :func:`_class_kernels_exact` from per-kind distance tables.

    Why: a pair's reduced kernel depends only on its kind (weight, Uiso) and its distance, so
    it is tabulated once per kind on a fine distance grid covering every zoomed distance
    (~10^4 evaluations instead of pairs × zooms ≈ 1.3·10^6 for the Ga2O3 2×2×2), and each
    (pair, zoom) is a 4-point interpolation summed straight into its class. The tabulated
    function is the same per-pair kernel (closed form inside the RDF range, DiffPy's windowed
    sum near its ends); where that function steps (window edges, the switch between the two)
    the steps are ≤ ~5e-7 of a pair's kernel, which bounds the interpolation error there.
    """
    lo = max(grid.pair_dmin, float(pairs.d0.min()) * float(zooms.min())) - 2 * step
    hi = min(grid.pair_dmax, float(pairs.d0.max()) * float(zooms.max())) + 3 * step
    d_tab = lo + step * np.arange(math.ceil((hi - lo) / step) + 1)
    tables = np.empty((len(pairs.kinds), len(d_tab), basis.rank))
    for kind in range(len(pairs.kinds)):
        first = int(np.flatnonzero(pairs.kind == kind)[0])
        sigma = pair_sigma(d_tab, pairs.msd[first], settings)
        weight = np.full(len(d_tab), pairs.weight[first])
        tables[kind] = pair_kernels(d_tab, sigma, weight, grid, basis)
    return _interpolate_class_kernels(
        np.ascontiguousarray(pairs.d0, dtype=np.float64),
        np.ascontiguousarray(pairs.kind, dtype=np.int64),
        np.ascontiguousarray(pairs.pair_class, dtype=np.int64),
        np.ascontiguousarray(zooms, dtype=np.float64),
        tables,
        lo,
        step,
        grid.pair_dmin,
        grid.pair_dmax,
        n_classes,
    )


@numba.njit(parallel=True, cache=True)
def _interpolate_class_kernels(
    d0, kind, pair_class, zooms, tables, lo, step, dmin, dmax, n_classes
):  # pragma: no cover - compiled
    """Σ over each class's pairs of the cubic interpolation of its kind's table at z·d0, per
    zoom (fp64 sums, a class's pairs in their order, stored fp32); pairs outside [dmin, dmax]
    are dropped.

    Class by class, all zooms of a pair at once: the class's (zooms × R) sums stay in L1 and
    a pair's zooms read one short stretch of its table, where pair order would jump through
    10-20 MB of tables and sums per pair (memory-bound: 2.6 s instead of 1.1 s for the
    class kernels of 10 × 109725, 53,875 pairs, measured at load 12).
    """
    n_zoom = len(zooms)
    rank = tables.shape[2]
    order = np.argsort(pair_class, kind="mergesort")
    ptr = np.zeros(n_classes + 1, np.int64)
    for p in range(len(pair_class)):
        ptr[pair_class[p] + 1] += 1
    for c in range(n_classes):
        ptr[c + 1] += ptr[c]
    out = np.empty((n_zoom, n_classes, rank), dtype=np.float32)
    block = 64
    for blk in numba.prange((n_classes + block - 1) // block):
        acc = np.empty((n_zoom, rank))
        for c in range(blk * block, min((blk + 1) * block, n_classes)):
            acc[:, :] = 0.0
            for q in range(ptr[c], ptr[c + 1]):
                p = order[q]
                k = kind[p]
                for iz in range(n_zoom):
                    d = zooms[iz] * d0[p]
                    if d < dmin or d > dmax:
                        continue
                    u = (d - lo) / step
                    i = int(u)
                    t = u - i
                    wm = -t * (t - 1.0) * (t - 2.0) / 6.0
                    w0 = (t + 1.0) * (t - 1.0) * (t - 2.0) / 2.0
                    w1 = -(t + 1.0) * t * (t - 2.0) / 2.0
                    w2 = (t + 1.0) * t * (t - 1.0) / 6.0
                    for r in range(rank):
                        acc[iz, r] += (
                            wm * tables[k, i - 1, r]
                            + w0 * tables[k, i, r]
                            + w1 * tables[k, i + 1, r]
                            + w2 * tables[k, i + 2, r]
                        )
            for iz in range(n_zoom):
                for r in range(rank):
                    out[iz, c, r] = acc[iz, r]
    return out


@dataclass(frozen=True)
class DistanceTables:
    """Reduced kernels of one pair per element-pair type, tabulated against distance.

    With three independent zooms every pair moves differently, so classes no longer share a
    kernel; instead each kept pair looks its kernel (and its derivative, for the Jacobian) up
    in these tables by linear interpolation. A 0.002 Å step keeps the interpolation error
    near 5e-5 of a peak, far below what moves Rwp at the 1e-4 level.
    """

    d_lo: float
    step: float
    values: np.ndarray  # (n_kinds, n_d, R)
    slopes: np.ndarray  # (n_kinds, n_d, R): d(values)/dd
    d_min: float  # pairs outside [d_min, d_max] are dropped, as DiffPy does
    d_max: float


def distance_tables(prep: PreparedModel, step: float = 0.002) -> DistanceTables:
    """Tabulate per-kind kernels over every distance a zoomed pair can take."""
    grid, settings = prep.grid, prep.settings
    d_lo = max(grid.pair_dmin, 0.5 * step)
    d = np.arange(d_lo, grid.pair_dmax + 2 * step, step)
    h = 1e-4
    n_kinds = len(prep.pairs.kinds)
    values = np.zeros((n_kinds, len(d), prep.basis.rank))
    slopes = np.zeros_like(values)
    for kind in range(n_kinds):
        sel = np.flatnonzero(prep.pairs.kind == kind)
        msd = float(prep.pairs.msd[sel[0]])
        weight = float(prep.pairs.weight[sel[0]])
        ones = np.full(len(d), weight)

        def kern(x: np.ndarray, ones: np.ndarray = ones, msd: float = msd) -> np.ndarray:
            return pair_kernels(x, pair_sigma(x, msd, settings), ones, grid, prep.basis)

        values[kind] = kern(d)
        slopes[kind] = (kern(d + h) - kern(d - h)) / (2 * h)
    return DistanceTables(
        d_lo,
        step,
        values.astype(np.float32),
        slopes.astype(np.float32),
        grid.pair_dmin,
        grid.pair_dmax,
    )
