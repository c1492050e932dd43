"""Batched isotropic-zoom fits: every motif of a catalogue against one G(r) in one pass.

Per motif the objective is χ²(s, z) = ‖g - s·G_z‖² + penalty(z). The scale has a closed
form, so χ²(z) = ‖g‖² - (g·G_z)²/‖G_z‖² + penalty(z). With pair-class kernels tabulated on a
zoom grid, g·G_z for every motif and grid zoom is one matrix product (classes × zooms). The
norm ‖G_z‖² needs the full reduced vector, so it is computed exactly at a few nodes,
interpolated across the grid to locate each motif's minimum, then computed exactly at
that grid zoom: the difference corrects the interpolated norms of the bracketing zooms (the
interpolation error is smooth), and a parabola through the three gives the zoom.

Two implementations of that same search. :func:`fit_isotropic` (used everywhere) works in a
class-space basis: the class kernels of every grid zoom span only ~80-90 directions of class
space (see :func:`_class_space`), so *one* fp32 GEMM of the class masks against those
directions (tile by tile, the masks built in cache, summed in fp64) gives coordinates from
which the numerator and the norm at any grid zoom are small fp64 products; the per-motif
search (nodes, exact norm at the centre, bracket walk) runs compiled on those. That is ~4×
fewer multiply-adds than the former GEMMs of the numerators, node kernels and exact norms,
and closer to exact arithmetic (Rwp within ~1e-7 of an fp64 evaluation, where fp32 GEMMs of
the kernels erred by ~1e-6). The former numpy implementation of the same search lives in
``tests/reference_isotropic.py``: the in-run baseline of ``benchmarks/bench_engine.py`` and,
in fp64, the reference the tests hold the compiled engine to.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numba
import numpy as np
from threadpoolctl import ThreadpoolController

from motex_stream.fitting.restraint import ZoomRestraint
from motex_stream.fitting.results import FitResults
from motex_stream.pdf.batched import PreparedModel
from motex_stream.pdf.formfactors import xray_f0

DEN_NODES = 3
CHUNK = 2048  # motifs per block of the compiled engine (class masks: 12 MB for 109725)
MAX_MOVES = 6  # bracket moves per motif (the former numpy engine's walk)
WORKERS = min(2, numba.config.NUMBA_NUM_THREADS)  # fitting threads (the target host: 2 cores)
MIN_WORKER_MOTIFS = 512  # fewer motifs than this per worker are not worth a second thread


def lagrange_matrix(x_nodes: np.ndarray, x: np.ndarray) -> np.ndarray:
    """(len(x), len(nodes)) weights of polynomial interpolation through the nodes (the numpy
    and the torch engines both interpolate the norms with these, so they agree)."""
    t = (x - x.mean()) / (np.ptp(x) / 2 or 1.0)
    tn = (x_nodes - x.mean()) / (np.ptp(x) / 2 or 1.0)
    vander_nodes = np.vander(tn, len(tn), increasing=True)
    vander = np.vander(t, len(tn), increasing=True)
    return vander @ np.linalg.inv(vander_nodes)


def physical_scale(prepared: PreparedModel, masks: np.ndarray, scale_c: np.ndarray) -> np.ndarray:
    """Convert the scale fitted against un-normalised kernels to DiffPy's ``mc``.

    DiffPy divides G by N<f(0)>² = (Σf)²/N over the motif's atoms; the kernels do not.
    """
    kept = prepared.model.kept_atoms(masks).astype(float)
    f0 = np.array([xray_f0(s) for s in prepared.model.symbols])
    n = kept.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        norm = np.where(n > 0, (kept @ f0) ** 2 / np.maximum(n, 1), 0.0)
    return scale_c * norm


# ----------------------------------------------------------------------------- compiled engine

#: Class-space directions kept: those whose singular value in the stacked class kernels of
#: every grid zoom exceeds this fraction of the largest. Below it lies the fp32 rounding of
#: the stored kernels (a plateau near 3e-9 of the largest for the Ga2O3 2×2×2); the kept
#: directions reproduce every ‖G_z‖² to ~5e-8 relative, the kernels' own fp32 precision.
CLASS_RANK_TOL = 1e-8
CLASS_TILE = 256  # classes per tile of class masks: built in L2, consumed at once by the GEMM
RANGE_SEED = 0  # the randomised range finder's test matrix (fixed: the tables are deterministic)
RANGE_OVERSAMPLE = 32  # sampled directions beyond R (widened while the last is above tol)


@dataclass(frozen=True)
class _EngineTables:
    """Index arrays and the class-space basis the compiled kernels need, derived once per
    prepared model."""

    set_ptr: np.ndarray  # (n_sets + 1,) CSR pointers into set_atoms
    set_atoms: np.ndarray  # mask bits (permutable columns) of each keep set
    class_a: np.ndarray  # (n_classes,) first keep set of each pair class
    class_b: np.ndarray
    set_count: np.ndarray  # (n_sets,) atoms kept with each keep set
    set_f0: np.ndarray  # (n_sets,) Σ f(0) of those atoms
    basis_tiles: tuple[np.ndarray, ...]  # (k, CLASS_TILE) float32 blocks of Uᵀ: y = Uᵀ x
    coords: np.ndarray  # (n_zoom, R, k) float64: its reduced G at grid zoom z is coords[z] @ y


def _class_space(kernels: np.ndarray, tol: float = CLASS_RANK_TOL) -> tuple[np.ndarray, np.ndarray]:
    """An orthonormal class-space basis U (n_classes, k) with K_z ≈ U Uᵀ K_z at every grid
    zoom, and coords[z] = (Uᵀ K_z)ᵀ (n_zoom, R, k).

    Why: a motif's reduced G at zoom z is K_zᵀ x (x its 0/1 class mask). The class kernels
    of all zooms stacked side by side (n_classes × n_zoom·R) have a small numerical rank (a
    band-limited G on [rmin, rmax] has few degrees of freedom, and zooming only moves it within
    them): 91 directions above 1e-8 of the largest singular value for the Ga2O3 2×2×2 (13,407
    classes, 51 zooms × 68), against 51 + 3·68 + 68 GEMM columns per motif without it. So one
    GEMM y = Uᵀ x gives the numerator and norm at every zoom through small (R × k) maps.

    U comes from a randomised range finder (fixed seed; fp64, one zoom block at a time, so no
    fp64 copy of all kernels), widened until the last sampled direction is below ``tol``.
    """
    n_zoom, n_classes, rank = kernels.shape
    full = min(n_classes, n_zoom * rank)
    width = min(full, rank + RANGE_OVERSAMPLE)
    rng = np.random.default_rng(RANGE_SEED)
    block = np.empty((n_classes, rank))
    while True:
        sketch = np.zeros((n_classes, width))
        for z in range(n_zoom):
            np.copyto(block, kernels[z])
            sketch += block @ rng.standard_normal((rank, width))
        q, _ = np.linalg.qr(sketch)
        proj = np.empty((width, n_zoom, rank))
        for z in range(n_zoom):
            np.copyto(block, kernels[z])
            proj[:, z] = q.T @ block
        u_small, s, vt = np.linalg.svd(proj.reshape(width, -1), full_matrices=False)
        if width >= full or s[-1] <= tol * s[0]:
            break
        width = min(full, 2 * width)
    k = max(1, int(np.count_nonzero(s > tol * s[0])))
    basis = q @ u_small[:, :k]  # (n_classes, k)
    coords = (s[:k, None] * vt[:k]).reshape(k, n_zoom, rank).transpose(1, 2, 0)
    return basis, np.ascontiguousarray(coords)


def _engine_tables(prepared: PreparedModel) -> _EngineTables:
    cached = prepared.engine_cache.get("isotropic")
    if isinstance(cached, _EngineTables):
        return cached
    from motex_stream.pdf.batched import _keep_sets

    atom_set, membership = _keep_sets(prepared.model)
    if not np.array_equal(membership, prepared.keepsets):
        raise ValueError("prepared keep sets do not match the starting model")
    f0 = np.array([xray_f0(s) for s in prepared.model.symbols])
    n_sets = len(membership)
    kept = atom_set >= 0
    # one BLAS thread: the tables do not depend on the thread count, and OpenBLAS's threads
    # spin-wait for cores other processes hold on a loaded machine
    with _blas_controller().limit(limits=1, user_api="blas"):
        basis, coords = _class_space(prepared.class_kernels)
    tables = _EngineTables(
        set_ptr=np.r_[0, np.cumsum(membership.sum(axis=1))].astype(np.int64),
        set_atoms=np.concatenate([np.flatnonzero(row) for row in membership]).astype(np.int64),
        class_a=np.ascontiguousarray(prepared.class_sets[:, 0], dtype=np.int64),
        class_b=np.ascontiguousarray(prepared.class_sets[:, 1], dtype=np.int64),
        set_count=np.bincount(atom_set[kept], minlength=n_sets).astype(np.float64),
        set_f0=np.bincount(atom_set[kept], weights=f0[kept], minlength=n_sets),
        basis_tiles=tuple(
            np.ascontiguousarray(basis[lo : lo + CLASS_TILE].T, dtype=np.float32)
            for lo in range(0, len(basis), CLASS_TILE)
        ),
        coords=coords,
    )
    prepared.engine_cache["isotropic"] = tables
    return tables


@numba.njit(nogil=True, cache=True)
def _set_rows(masks, set_ptr, set_atoms, set_count, set_f0, out, norm):  # pragma: no cover
    """``out[s, i]`` = 1.0 iff motif i keeps set s (float32, sets × motifs), and DiffPy's
    N<f(0)>² = (Σ f)²/N over each motif's kept atoms (0 for an empty motif)."""
    for i in range(masks.shape[0]):
        n_atoms = 0.0
        f_sum = 0.0
        for s in range(len(set_ptr) - 1):
            v = np.float32(0.0)
            for k in range(set_ptr[s], set_ptr[s + 1]):
                if masks[i, set_atoms[k]]:
                    v = np.float32(1.0)
                    n_atoms += set_count[s]
                    f_sum += set_f0[s]
                    break
            out[s, i] = v
        norm[i] = f_sum * f_sum / n_atoms if n_atoms > 0 else 0.0


@numba.njit(nogil=True, fastmath=True, cache=True)
def _class_rows(sets, class_a, class_b, lo, out):  # pragma: no cover - compiled
    """Class masks of classes ``lo .. lo + len(out)`` (classes × motifs): a class is kept iff
    both its keep sets are, i.e. the product of two set rows (vectorised, from L2)."""
    for c in range(out.shape[0]):
        ra = sets[class_a[lo + c]]
        rb = sets[class_b[lo + c]]
        row = out[c]
        for i in range(len(row)):
            row[i] = ra[i] * rb[i]


# reassociation lets LLVM vectorise the dot products; no nnan/ninf (the search compares with inf)
_VEC = {"reassoc", "contract", "arcp", "nsz"}


@numba.njit(nogil=True, fastmath=_VEC, cache=True)
def _sq_norm(m, y):  # pragma: no cover - compiled
    """‖m @ y‖² (m: R × k), accumulated in fp64."""
    acc = 0.0
    for r in range(m.shape[0]):
        e = 0.0
        for j in range(len(y)):
            e += m[r, j] * y[j]
        acc += e * e
    return acc


@numba.njit(nogil=True, fastmath=_VEC, cache=True)
def _fit_rows(
    YT, NE, n_nodes, coords, lag, penalty, g2, zooms, max_moves, rwp, scale_c, zoom
):  # pragma: no cover - compiled
    """The zoom search of every motif from its class-space coordinates ``YT[i]`` and
    ``NE[i]`` (its numerators at every grid zoom, then its reduced G at each node).

    Norms at the interpolation nodes, interpolated across the grid to find its minimum, the
    exact norm at that centre (``coords[c] @ y``) correcting the bracket, and the bracket walk
    (at most ``max_moves`` moves, each with a new exact norm) refined by a parabola: the
    search of the former numpy engine (``tests/reference_isotropic.py``). In the last move
    the centre still moves but the bracket refined is the one before the move (what the
    numpy engine does after its last move).
    """
    n_zoom = len(zooms)
    rank = coords.shape[1]
    step_z = zooms[1] - zooms[0]
    dn = np.empty(n_nodes)
    chi3 = np.empty(3)
    den3 = np.empty(3)
    num3 = np.empty(3)
    den = np.empty(n_zoom)
    for i in range(YT.shape[0]):
        y = YT[i]
        num = NE[i, :n_zoom]
        for n in range(n_nodes):
            acc = 0.0
            for r in range(n_zoom + n * rank, n_zoom + (n + 1) * rank):
                acc += NE[i, r] * NE[i, r]
            dn[n] = acc
        best = 0
        best_chi = np.inf
        for z in range(n_zoom):
            d = 0.0
            for n in range(n_nodes):
                d += dn[n] * lag[z, n]
            den[z] = d
            chi = (g2 - num[z] * num[z] / d if d > 0 else g2) + penalty[z]
            if chi < best_chi:
                best_chi = chi
                best = z
        c = min(max(best, 1), n_zoom - 2)
        exact = _sq_norm(coords[c], y)
        for move in range(max_moves):
            corr = exact - den[c]
            for t in range(3):
                zi = c - 1 + t
                d = den[zi] + corr
                den3[t] = d
                num3[t] = num[zi]
                chi3[t] = (g2 - num[zi] * num[zi] / d if d > 0 else g2) + penalty[zi]
            kmin = 0
            if chi3[1] < chi3[kmin]:
                kmin = 1
            if chi3[2] < chi3[kmin]:
                kmin = 2
            step = kmin - 1
            if step != 0 and 1 <= c + step <= n_zoom - 2:
                c += step
                if move < max_moves - 1:
                    exact = _sq_norm(coords[c], y)
                    continue
            break
        c_m, c_0, c_p = chi3[0], chi3[1], chi3[2]
        curv = c_m - 2 * c_0 + c_p
        off = 0.5 * (c_m - c_p) / curv if curv > 0 else 0.0
        off = min(max(off, -1.0), 1.0)
        w0 = 0.5 * off * (off - 1)
        w1 = 1 - off * off
        w2 = 0.5 * off * (off + 1)
        num_v = w0 * num3[0] + w1 * num3[1] + w2 * num3[2]
        den_v = w0 * den3[0] + w1 * den3[1] + w2 * den3[2]
        if den_v > 0:
            rwp[i] = np.sqrt(max(g2 - num_v * num_v / den_v, 0.0) / g2)
            scale_c[i] = num_v / den_v
        else:
            rwp[i] = 1.0
            scale_c[i] = 0.0
        zoom[i] = zooms[c] + off * step_z


@dataclass(frozen=True)
class _Shared:
    """What every chunk of one fit_isotropic call reads."""

    tables: _EngineTables
    masks: np.ndarray
    maps_t: np.ndarray  # (k, n_zoom + n_nodes·R): y → numerators, then G at each node
    n_nodes: int
    lag: np.ndarray
    penalty: np.ndarray
    g2: float
    zooms: np.ndarray


_CONTROLLER: ThreadpoolController | None = None


def _blas_controller() -> ThreadpoolController:
    """One inspection of the loaded BLAS libraries per process (it costs milliseconds)."""
    global _CONTROLLER
    if _CONTROLLER is None:
        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER


def _chunks(m: int, size: int) -> list[slice]:
    size = max(1, size)
    return [slice(s, min(s + size, m)) for s in range(0, m, size)]


def _run_chunks(sh: _Shared, pieces: list[slice], out: tuple[np.ndarray, ...]) -> None:
    """Fit the motifs of ``pieces`` (slices of ``sh.masks``) into ``out`` (rwp, scale, zoom,
    DiffPy's normalisation). The compiled kernels are serial and release the GIL: the
    parallelism is the fitting threads', so no numba threading layer is involved (the
    ``workqueue`` layer must not be entered from two threads at once).

    Per chunk: the set masks (sets × motifs), then, tile by tile of ``CLASS_TILE`` classes,
    the class masks of the tile (built in L2 from two set rows each) and one GEMM that adds
    the tile's share of the class-space coordinates Y = Uᵀ X (fp32 within a tile, added to
    an fp64 sum: one fp32 sum over all classes erred by ~4e-7 in Rwp).
    The full class-mask block (110 MB per 2,048 motifs at 13,407 classes) is never written to
    memory. The tiles are fixed, so the sums are the same on a loaded machine.
    """
    if not pieces:
        return
    rwp, scale_c, zoom, norm = out
    tables = sh.tables
    k = tables.basis_tiles[0].shape[0]
    rows = max(p.stop - p.start for p in pieces)
    sets = np.empty((len(tables.set_ptr) - 1, rows), np.float32)
    tile_buf = np.empty(tables.basis_tiles[0].shape[1] * rows, np.float32)
    part_buf = np.empty(k * rows, np.float32)
    y_buf = np.empty(k * rows)
    yt_buf = np.empty(k * rows)
    ne_buf = np.empty(sh.maps_t.shape[1] * rows)
    for sl in pieces:
        m = sl.stop - sl.start
        chunk_masks = sh.masks[sl]
        set_rows = sets[:, :m]
        _set_rows(
            chunk_masks,
            tables.set_ptr,
            tables.set_atoms,
            tables.set_count,
            tables.set_f0,
            set_rows,
            norm[sl],
        )
        part = part_buf[: k * m].reshape(k, m)
        y = y_buf[: k * m].reshape(k, m)
        y[:] = 0.0
        lo = 0
        for basis_tile in tables.basis_tiles:
            tile = tile_buf[: basis_tile.shape[1] * m].reshape(-1, m)
            _class_rows(set_rows, tables.class_a, tables.class_b, lo, tile)
            lo += len(tile)
            # numpy's matmul, not scipy's sgemm: two threads' sgemm calls ran one at a time
            np.matmul(basis_tile, tile, out=part)
            y += part
        yt = yt_buf[: k * m].reshape(m, k)
        np.copyto(yt, y.T)
        # numerators and node kernels of every motif: one small fp64 GEMM
        ne = np.matmul(yt, sh.maps_t, out=ne_buf[: sh.maps_t.shape[1] * m].reshape(m, -1))
        _fit_rows(
            yt,
            ne,
            sh.n_nodes,
            tables.coords,
            sh.lag,
            sh.penalty,
            sh.g2,
            sh.zooms,
            MAX_MOVES,
            rwp[sl],
            scale_c[sl],
            zoom[sl],
        )


def _data_weights(
    prepared: PreparedModel, g: np.ndarray, restraint: ZoomRestraint, restrained_axes: int
) -> tuple[np.ndarray, int, np.ndarray, np.ndarray, float]:
    """Numerator maps of every grid zoom and node maps (one GEMM operand), the number of
    nodes, the norm interpolation, the penalty
    and ‖g‖² for one observed G. The last one is kept: callers fit one frame's catalogue in
    several calls (chunks), all against the same G."""
    key = (np.asarray(g, dtype=float).tobytes(), restraint, restrained_axes)
    cached = prepared.engine_cache.get("isotropic_data")
    if isinstance(cached, tuple) and cached[0] == key:
        return cached[1]  # type: ignore[no-any-return]
    tables = _engine_tables(prepared)
    b, g2 = prepared.project_data(g)
    zooms = prepared.zooms
    n_zoom = len(zooms)
    nvec = np.einsum("r,zrk->zk", b, tables.coords)  # g·G_z = nvec[z] @ y
    nodes = np.unique(np.round(np.linspace(0, n_zoom - 1, DEN_NODES)).astype(int))
    node_maps = tables.coords[nodes].reshape(-1, tables.coords.shape[2])
    maps_t = np.ascontiguousarray(np.vstack([nvec, node_maps]).T)
    lag = np.ascontiguousarray(lagrange_matrix(zooms[nodes], zooms))
    penalty = np.ascontiguousarray(restrained_axes * restraint.penalty(zooms), dtype=np.float64)
    value = (maps_t, len(nodes), lag, penalty, g2)
    prepared.engine_cache["isotropic_data"] = (key, value)
    return value


def fit_isotropic(
    prepared: PreparedModel,
    masks: np.ndarray,
    g: np.ndarray,
    restraint: ZoomRestraint | None = None,
    restrained_axes: int = 1,
    chunk: int = CHUNK,
) -> FitResults:
    """Best scale and one zoom per motif; Rwp over the data points (penalty excluded)."""
    restraint = restraint or ZoomRestraint()
    masks = np.atleast_2d(np.asarray(masks))
    if masks.shape[1] != prepared.model.n_permutable:
        raise ValueError(
            f"masks have {masks.shape[1]} bits but the model has {prepared.model.n_permutable} "
            "permutable atoms"
        )
    masks = np.ascontiguousarray(masks != 0, dtype=np.uint8)
    tables = _engine_tables(prepared)
    maps_t, n_nodes, lag, penalty, g2 = _data_weights(prepared, g, restraint, restrained_axes)
    m_all = len(masks)
    rwp = np.empty(m_all)
    scale_c = np.empty(m_all)
    zoom = np.empty(m_all)
    norm = np.empty(m_all)
    shared = _Shared(tables, masks, maps_t, n_nodes, lag, penalty, g2, prepared.zooms)
    out = (rwp, scale_c, zoom, norm)
    # One worker per core, each with serial kernels and a single-threaded BLAS: no two thread
    # pools (numba's and OpenBLAS's, both spin-waiting) take turns on the cores.
    workers = max(1, min(WORKERS, m_all // MIN_WORKER_MOTIFS))
    with _blas_controller().limit(limits=1, user_api="blas"):
        if workers == 1:
            _run_chunks(shared, _chunks(m_all, chunk), out)
        else:
            n_chunks = -(-max(workers, -(-m_all // chunk)) // workers) * workers
            pieces = _chunks(m_all, -(-m_all // n_chunks))
            with ThreadPoolExecutor(workers, thread_name_prefix="fit") as pool:
                futures = [
                    pool.submit(_run_chunks, shared, pieces[k::workers], out)
                    for k in range(workers)
                ]
                for f in futures:
                    f.result()
    return FitResults(
        rwp=rwp,
        scale=scale_c * norm,
        zoom=np.repeat(zoom[:, None], 3, axis=1),
        mode="isotropic",
    )
