"""Batched isotropic-zoom fits: every motif of a catalogue against one G(r) in one pass.

Per motif the objective is χ²(s, z) = ‖g - s·G_z‖² + penalty(z). The scale has a closed
form, so χ²(z) = ‖g‖² - (g·G_z)²/‖G_z‖² + penalty(z). With pair-class kernels tabulated on a
zoom grid, g·G_z for every motif and grid zoom is one matrix product (classes × zooms). The
norm ‖G_z‖² needs the full reduced vector, so it is computed exactly at a few nodes,
interpolated across the grid to locate each motif's minimum, then computed exactly at
that grid zoom: the difference corrects the interpolated norms of the bracketing zooms (the
interpolation error is smooth), and a parabola through the three gives the zoom.

Two implementations of that same search. :func:`fit_isotropic` (used everywhere) builds the
class masks in a compiled kernel, runs *one* fp32 GEMM of the class masks against
[numerators | node kernels], does the per-motif search compiled (fp64 arithmetic), and
computes the exact norms with one GEMM per centre zoom over rows grouped by that zoom (the
centres cluster on a few grid zooms); the rare bracket moves use a compiled fp64 gather.
:func:`fit_isotropic_numpy` is the former numpy implementation, kept as the in-run baseline
of ``benchmarks/bench_engine.py`` and as the reference the tests hold the new one to (Rwp
within 1e-6).
"""

from __future__ import annotations

import itertools
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
NUMPY_CHUNK = 1024  # the former engine's block
MAX_MOVES = 6  # bracket moves per motif, as the numpy engine
WORKERS = min(2, numba.config.NUMBA_NUM_THREADS)  # fitting threads (the target host: 2 cores)
MIN_WORKER_MOTIFS = 512  # fewer motifs than this per worker are not worth a second thread


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


def fit_isotropic_numpy(
    prep: PreparedModel,
    masks: np.ndarray,
    g: np.ndarray,
    restraint: ZoomRestraint | None = None,
    restrained_axes: int = 1,
    chunk: int = NUMPY_CHUNK,
) -> FitResults:
    """The former numpy implementation of :func:`fit_isotropic` (same search, same result
    to ~4e-7 in Rwp); the in-run baseline of the engine benchmark."""
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


# ----------------------------------------------------------------------------- compiled engine


@dataclass(frozen=True)
class _EngineTables:
    """Index arrays the compiled kernels need, derived once per prepared model."""

    set_ptr: np.ndarray  # (n_sets + 1,) CSR pointers into set_atoms
    set_atoms: np.ndarray  # mask bits (permutable columns) of each keep set
    class_a: np.ndarray  # (n_classes,) first keep set of each pair class
    class_b: np.ndarray
    set_count: np.ndarray  # (n_sets,) atoms kept with each keep set
    set_f0: np.ndarray  # (n_sets,) Σ f(0) of those atoms
    kernels_t: np.ndarray  # (n_zoom, R, n_classes) float32, C-contiguous


def _engine_tables(prep: PreparedModel) -> _EngineTables:
    cached = prep.engine_cache.get("isotropic")
    if isinstance(cached, _EngineTables):
        return cached
    from motex_stream.pdf.batched import _keep_sets

    atom_set, membership = _keep_sets(prep.model)
    if not np.array_equal(membership, prep.keepsets):
        raise ValueError("prepared keep sets do not match the starting model")
    f0 = np.array([xray_f0(s) for s in prep.model.symbols])
    n_sets = len(membership)
    kept = atom_set >= 0
    tables = _EngineTables(
        set_ptr=np.r_[0, np.cumsum(membership.sum(axis=1))].astype(np.int64),
        set_atoms=np.concatenate([np.flatnonzero(row) for row in membership]).astype(np.int64),
        class_a=np.ascontiguousarray(prep.class_sets[:, 0], dtype=np.int64),
        class_b=np.ascontiguousarray(prep.class_sets[:, 1], dtype=np.int64),
        set_count=np.bincount(atom_set[kept], minlength=n_sets).astype(np.float64),
        set_f0=np.bincount(atom_set[kept], weights=f0[kept], minlength=n_sets),
        kernels_t=np.ascontiguousarray(prep.class_kernels.transpose(0, 2, 1), dtype=np.float32),
    )
    prep.engine_cache["isotropic"] = tables
    return tables


@numba.njit(nogil=True, cache=True)
def _set_words(masks, order, set_ptr, set_atoms, words):
    """Bit-sliced keep sets: bit t of ``words[s, w]`` says whether motif ``order[64 w + t]``
    keeps set ``s`` (64 motifs per machine word)."""
    n_sets = len(set_ptr) - 1
    m = len(order)
    for w in range(words.shape[1]):
        for s in range(n_sets):
            x = np.uint64(0)
            for t in range(min(64, m - 64 * w)):
                i = order[64 * w + t]
                for k in range(set_ptr[s], set_ptr[s + 1]):
                    if masks[i, set_atoms[k]]:
                        x |= np.uint64(1) << np.uint64(t)
                        break
            words[s, w] = x


@numba.njit(nogil=True, fastmath=True, cache=True)
def _class_columns(words, class_a, class_b, out):
    """Class masks, transposed (classes × motifs, float32 for the GEMM): a class is kept iff
    both its keep sets are, i.e. one AND of two words per 64 motifs."""
    for c in range(len(class_a)):
        row = out[c]
        wa = words[class_a[c]]
        wb = words[class_b[c]]
        for w in range(words.shape[1]):
            x = wa[w] & wb[w]
            for t in range(64):
                row[64 * w + t] = np.float32((x >> np.uint64(t)) & np.uint64(1))


@numba.njit(nogil=True, cache=True)
def _motif_norm(masks, set_ptr, set_atoms, set_count, set_f0, norm):
    """DiffPy's N<f(0)>² = (Σ f)²/N over each motif's kept atoms (0 for an empty motif)."""
    for i in range(masks.shape[0]):
        n_atoms = 0.0
        f_sum = 0.0
        for s in range(len(set_ptr) - 1):
            for k in range(set_ptr[s], set_ptr[s + 1]):
                if masks[i, set_atoms[k]]:
                    n_atoms += set_count[s]
                    f_sum += set_f0[s]
                    break
        norm[i] = f_sum * f_sum / n_atoms if n_atoms > 0 else 0.0


@numba.njit(nogil=True, cache=True)
def _grid_search(AT, n_zoom, R, lag, penalty, g2, den, centre):  # pragma: no cover
    """Interpolated norms on the zoom grid and the grid minimum. ``AT`` (transposed: the
    GEMM is faster that way round) holds g·G_z per grid zoom, then the node kernels."""
    n_nodes = lag.shape[1]
    for i in range(AT.shape[1]):
        dn = np.zeros(n_nodes)
        for n in range(n_nodes):
            acc = 0.0
            base = n_zoom + n * R
            for r in range(R):
                v = np.float64(AT[base + r, i])
                acc += v * v
            dn[n] = acc
        best = 0
        best_chi = np.inf
        for z in range(n_zoom):
            d = 0.0
            for n in range(n_nodes):
                d += dn[n] * lag[z, n]
            den[i, z] = d
            nu = np.float64(AT[z, i])
            chi = (g2 - nu * nu / d if d > 0 else g2) + penalty[z]
            if chi < best_chi:
                best_chi = chi
                best = z
        centre[i] = min(max(best, 1), n_zoom - 2)


@numba.njit(nogil=True, cache=True)
def _bracket_round(
    AT, den, exact, centre, rows, last, penalty, g2, zooms, moved, rwp, scale_c, zoom
):  # pragma: no cover - compiled
    """One step of the bracket walk for ``rows``: the 3-point bracket around the centre
    (norms corrected by the exact one there); a motif whose minimum is at an end moves one
    grid step (``moved``, and needs a new exact norm), the others are refined by a parabola
    and written out. In the ``last`` round a move still updates the centre but the bracket
    refined is the one before the move (what the numpy engine does after its sixth move)."""
    n_zoom = len(zooms)
    step_z = zooms[1] - zooms[0]
    for q in range(len(rows)):
        i = rows[q]
        c = centre[i]
        corr = exact[i] - den[i, c]
        chi3 = np.empty(3)
        den3 = np.empty(3)
        num3 = np.empty(3)
        for t in range(3):
            zi = c - 1 + t
            d = den[i, zi] + corr
            nu = np.float64(AT[zi, i])
            den3[t] = d
            num3[t] = nu
            chi3[t] = (g2 - nu * nu / d if d > 0 else g2) + penalty[zi]
        k = 0
        if chi3[1] < chi3[k]:
            k = 1
        if chi3[2] < chi3[k]:
            k = 2
        step = k - 1
        moved[q] = False
        if step != 0 and 1 <= c + step <= n_zoom - 2:
            centre[i] = c + step
            if not last:
                moved[q] = True
                continue
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
        zoom[i] = zooms[centre[i]] + off * step_z


def _exact_norms(
    masks: np.ndarray,
    rows: np.ndarray,
    centre: np.ndarray,
    tables: _EngineTables,
    words: np.ndarray,
    sorted_t: np.ndarray,
    out: np.ndarray,
) -> None:
    """Exact ‖G‖² of motifs ``rows`` at their centre zoom, into ``out[rows]``.

    The class masks of those motifs are built again (bit-sliced, cheap), ordered by centre
    zoom, so each zoom is one fp32 GEMM over a block of columns, with no row copies. The
    centres cluster on a few grid zooms, so these GEMMs are few and well filled.
    """
    order = rows[np.argsort(centre[rows], kind="stable")]
    nw = -(-len(order) // 64)
    _set_words(masks, order, tables.set_ptr, tables.set_atoms, words[:, :nw])
    _class_columns(words[:, :nw], tables.class_a, tables.class_b, sorted_t[:, : 64 * nw])
    sorted_centre = centre[order]
    bounds = np.r_[0, np.flatnonzero(np.diff(sorted_centre)) + 1, len(order)]
    for lo, hi in itertools.pairwise(bounds):
        e = tables.kernels_t[sorted_centre[lo]] @ sorted_t[:, lo:hi]  # (R, rows)
        out[order[lo:hi]] = np.einsum("rm,rm->m", e, e, dtype=np.float64)


@dataclass(frozen=True)
class _Shared:
    """What every chunk of one fit_isotropic call reads."""

    tables: _EngineTables
    masks: np.ndarray
    weights_t: np.ndarray
    lag: np.ndarray
    penalty: np.ndarray
    g2: float
    zooms: np.ndarray
    rank: int


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
    ``workqueue`` layer must not be entered from two threads at once)."""
    if not pieces:
        return
    rwp, scale_c, zoom, norm = out
    tables = sh.tables
    n_zoom = len(sh.zooms)
    rows = max(p.stop - p.start for p in pieces)
    n_words = -(-rows // 64)
    words = np.zeros((len(tables.set_ptr) - 1, n_words), np.uint64)
    ck_t = np.empty((len(tables.class_a), 64 * n_words), np.float32)
    sorted_t = np.empty_like(ck_t)
    den_buf = np.empty((rows, n_zoom))
    centre_buf = np.empty(rows, np.int64)
    exact_buf = np.empty(rows)
    for sl in pieces:
        m = sl.stop - sl.start
        den, centre, exact = den_buf[:m], centre_buf[:m], exact_buf[:m]
        chunk_masks = sh.masks[sl]
        _motif_norm(
            chunk_masks, tables.set_ptr, tables.set_atoms, tables.set_count, tables.set_f0, norm[sl]
        )
        nw = -(-m // 64)
        rows_all = np.arange(m)
        _set_words(chunk_masks, rows_all, tables.set_ptr, tables.set_atoms, words[:, :nw])
        _class_columns(words[:, :nw], tables.class_a, tables.class_b, ck_t[:, : 64 * nw])
        # (Z + nodes·R, m): numerators g·G_z and node kernels of every motif, one GEMM
        AT = sh.weights_t @ ck_t[:, :m]
        _grid_search(AT, n_zoom, sh.rank, sh.lag, sh.penalty, sh.g2, den, centre)
        _exact_norms(chunk_masks, rows_all, centre, tables, words, sorted_t, exact)
        active = rows_all
        for move in range(MAX_MOVES):
            moved = np.empty(len(active), np.bool_)
            _bracket_round(
                AT,
                den,
                exact,
                centre,
                active,
                move == MAX_MOVES - 1,
                sh.penalty,
                sh.g2,
                sh.zooms,
                moved,
                rwp[sl],
                scale_c[sl],
                zoom[sl],
            )
            active = active[moved]
            if not len(active):
                break
            _exact_norms(chunk_masks, active, centre, tables, words, sorted_t, exact)


def _data_weights(
    prep: PreparedModel, g: np.ndarray, restraint: ZoomRestraint, restrained_axes: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """GEMM operand (numerators of every grid zoom, then the node kernels), the norm
    interpolation, the penalty and ‖g‖² for one observed G. The last one is kept: callers fit
    one frame's catalogue in several calls (chunks), all against the same G."""
    key = (np.asarray(g, dtype=float).tobytes(), restraint, restrained_axes)
    cached = prep.engine_cache.get("isotropic_data")
    if isinstance(cached, tuple) and cached[0] == key:
        return cached[1]  # type: ignore[no-any-return]
    b, g2 = prep.project_data(g)
    zooms = prep.zooms
    n_zoom = len(zooms)
    beta = (prep.class_kernels @ b.astype(np.float32)).T.astype(np.float32)  # (classes, Z)
    nodes = np.unique(np.round(np.linspace(0, n_zoom - 1, DEN_NODES)).astype(int))
    weights_t = np.ascontiguousarray(np.hstack([beta, prep.kernels_at(nodes)]).T, np.float32)
    lag = np.ascontiguousarray(_lagrange_matrix(zooms[nodes], zooms))
    penalty = np.ascontiguousarray(restrained_axes * restraint.penalty(zooms), dtype=np.float64)
    value = (weights_t, lag, penalty, g2)
    prep.engine_cache["isotropic_data"] = (key, value)
    return value


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
    masks = np.atleast_2d(np.asarray(masks))
    if masks.shape[1] != prep.model.n_permutable:
        raise ValueError(
            f"masks have {masks.shape[1]} bits but the model has {prep.model.n_permutable} "
            "permutable atoms"
        )
    masks = np.ascontiguousarray(masks != 0, dtype=np.uint8)
    tables = _engine_tables(prep)
    weights_t, lag, penalty, g2 = _data_weights(prep, g, restraint, restrained_axes)
    m_all = len(masks)
    rwp = np.empty(m_all)
    scale_c = np.empty(m_all)
    zoom = np.empty(m_all)
    norm = np.empty(m_all)
    shared = _Shared(tables, masks, weights_t, lag, penalty, g2, prep.zooms, prep.basis.rank)
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
