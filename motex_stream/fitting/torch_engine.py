"""The batched fits of :mod:`~motex_stream.fitting.isotropic` and
:mod:`~motex_stream.fitting.anisotropic` in torch, for a CUDA device (the ``gpu`` extra).

Why a second implementation: the numpy/numba engines are built for a 2-core host; on a GPU
the same mathematics runs as a few large tensor operations per chunk of motifs, which is what
big catalogues (10^5-10^7 motifs) and the anisotropic mode (a Levenberg-Marquardt loop per
motif) need. Nothing here needs a GPU: ``device="auto"`` takes CUDA when torch sees one and
CPU torch otherwise, and CI tests the CPU path against the numpy engines (isotropic: Rwp
within 1e-5; anisotropic: see the arithmetic below).

What is computed is the numpy engines' answer, step for step, from the same prepared model
(:class:`~motex_stream.pdf.batched.PreparedModel` and its
:class:`~motex_stream.pdf.batched.DistanceTables`); only the order of the additions differs:

* isotropic (:func:`fit_isotropic_torch`): numerators g·G_z on the zoom grid, norms ‖G_z‖²
  interpolated from a few node zooms, the grid minimum, the exact norm at the bracket centre,
  the same bracket walk (at most :data:`MAX_MOVES` moves, the last one not re-refined) and the
  same parabola, as the former numpy engine (``tests/reference_isotropic.py``) does it;
* anisotropic (:func:`fit_anisotropic_torch`): each motif starts from its isotropic optimum
  (three restrained axes) and runs the same Levenberg-Marquardt iteration as the numba
  ``_lm`` (same damping, up to 8 tries per iteration, same stopping rule), then the same
  screened second-basin starts, axis by axis. The per-motif loop becomes a batched state
  machine: each round makes one trial step for every motif still running.

Arithmetic (``dtype``): the isotropic fits multiply masks and kernels in float64 (default)
and always square and search in float64; against the numpy engine's float32 GEMMs Rwp moves
by at most 1.2e-6 (measured; float32 here: 1.7e-5 on one of 6000 motifs). The anisotropic
fits sum F(z) and dF/dz in float32 (default), as the numba engine does, with float64
Levenberg-Marquardt algebra: χ² = ‖b‖² - (b·F)²/‖F‖² loses ~2 digits to cancellation and
the fit stops at a 1e-8 relative χ² change, so the float32 rounding of F decides where some
motifs stop. Measured on the 1000 reference motifs: max |ΔRwp| 1.6e-5 (one motif above
1e-5), the same as the numba engine against itself with its tables perturbed by 1e-7 of
themselves (1.6e-5, four motifs above 1e-5); float64 sums drift further (3.6e-5, 20 motifs).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from motex_stream.fitting.anisotropic import ALT_SCREEN, prep_tables, vector_classes
from motex_stream.fitting.isotropic import DEN_NODES, MAX_MOVES, lagrange_matrix
from motex_stream.fitting.restraint import ZoomRestraint
from motex_stream.fitting.results import FitResults
from motex_stream.pdf.batched import PreparedModel
from motex_stream.pdf.formfactors import xray_f0

try:  # the optional ``gpu`` extra
    import torch
except ImportError:  # pragma: no cover - depends on the environment
    torch = None  # type: ignore[assignment]

LM_TRIES = 8  # damping increases per LM iteration before a motif stops (as numba's _lm)
LM_REL_STOP = 1e-8  # relative χ² decrease below which a motif has converged
#: Motifs per chunk: bounds the device memory whatever the catalogue size (the class masks of
#: one isotropic chunk are chunk × classes values, the kept pairs of an anisotropic one up to
#: chunk × pairs).
ISO_CHUNK = {"cpu": 1024, "cuda": 16384}
ANISO_CHUNK = {"cpu": 128, "cuda": 8192}
#: Most elements of those per-chunk arrays: a large model gets smaller chunks.
ELEMENT_BUDGET = {"cpu": 1 << 23, "cuda": 1 << 26}
#: Motifs per call from ``steps.fit_masks`` (its progress step); each call chunks again.
CALL_CHUNK = 65536
#: CPU threads, each fitting its own chunks (the numpy engine's choice: the target host has
#: 2 cores).
CPU_WORKERS = max(1, min(2, os.cpu_count() or 1))


def torch_available() -> bool:
    """Whether the ``gpu`` extra (torch) is importable."""
    return torch is not None


def _require_torch() -> Any:
    if torch is None:
        raise RuntimeError(
            "engine = 'torch' needs PyTorch: pip install -c constraints.txt 'motex-stream[gpu]' "
            "(the pin keeps pip from choosing a newer, multi-GB CUDA build)"
        )
    return torch


def resolve_device(device: str = "auto") -> str:
    """``auto`` → ``cuda`` when torch sees a CUDA device, else ``cpu``; others are checked."""
    t = _require_torch()
    if device == "auto":
        return "cuda" if t.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not t.cuda.is_available():
        raise RuntimeError(f"device {device!r} asked for, but torch sees no CUDA device")
    t.device(device)  # raises on a malformed name
    return device


def _kind(device: str) -> str:
    return "cuda" if device.startswith("cuda") else "cpu"


# ------------------------------------------------------------------------------------ tables


@dataclass(frozen=True)
class _Tables:
    """The prepared model's tables on one device and dtype (built once, cached on ``prepared``)."""

    device: str
    dtype: Any
    keepsets_t: Any  # (n_perm, n_sets) 0/1
    class_a: Any  # (n_classes,) long
    class_b: Any
    kernels: Any  # (Z, n_classes, R)
    node_kernels: Any  # (n_classes, nodes·R)
    lag_t: Any  # (nodes, Z) norm interpolation, transposed
    zooms: Any  # (Z,) float64
    set_count: Any  # (n_sets,) atoms kept with each keep set
    set_f0: Any  # (n_sets,) Σ f(0) of those atoms
    atoms_t: Any  # (n_perm, n_atoms) 0/1: which mask bits keep each atom


def _atom_sets(prepared: PreparedModel) -> tuple[np.ndarray, np.ndarray]:
    """(n_perm, n_atoms) keep rule of every atom and the keep-set id of each atom (-1: none).

    A permutable atom is kept with its own bit, a dependent one with any of its bonded bits;
    each such rule is one row of ``prepared.keepsets``.
    """
    model = prepared.model
    rules = np.zeros((model.n_permutable, model.n_atoms), dtype=bool)
    rules[np.arange(model.n_permutable), model.permutable] = True
    if len(model.dependent):
        rules[:, model.dependent] = model.bonded.T
    index = {row.tobytes(): s for s, row in enumerate(prepared.keepsets.astype(bool))}
    atom_set = np.array(
        [index.get(col.tobytes(), -1) if col.any() else -1 for col in rules.T], dtype=np.int64
    )
    return rules, atom_set


def _tables(prepared: PreparedModel, device: str, dtype: Any) -> _Tables:
    key = ("torch", device, str(dtype))
    cached = prepared.engine_cache.get(str(key))
    if isinstance(cached, _Tables):
        return cached
    t = _require_torch()
    zooms = np.asarray(prepared.zooms, dtype=float)
    n_zoom = len(zooms)
    nodes = np.unique(np.round(np.linspace(0, n_zoom - 1, DEN_NODES)).astype(int))
    rules, atom_set = _atom_sets(prepared)
    kept = atom_set >= 0
    f0 = np.array([xray_f0(s) for s in prepared.model.symbols])
    n_sets = len(prepared.keepsets)

    def put(a: np.ndarray, dt: Any = dtype) -> Any:
        return t.as_tensor(np.ascontiguousarray(a), device=device).to(dt)

    kernels = put(prepared.class_kernels)  # float32 values, summed in ``dtype``
    tables = _Tables(
        device=device,
        dtype=dtype,
        keepsets_t=put(prepared.keepsets.T.astype(np.float32)),
        class_a=put(prepared.class_sets[:, 0], t.long),
        class_b=put(prepared.class_sets[:, 1], t.long),
        kernels=kernels,
        node_kernels=kernels[t.as_tensor(nodes, device=device)]
        .permute(1, 0, 2)
        .reshape(prepared.n_classes, -1)
        .contiguous(),
        lag_t=put(lagrange_matrix(zooms[nodes], zooms).T, t.float64),
        zooms=put(zooms, t.float64),
        set_count=put(np.bincount(atom_set[kept], minlength=n_sets), t.float64),
        set_f0=put(np.bincount(atom_set[kept], weights=f0[kept], minlength=n_sets), t.float64),
        atoms_t=put(rules.astype(np.float32)),
    )
    prepared.engine_cache[str(key)] = tables
    return tables


def _check_masks(prepared: PreparedModel, masks: np.ndarray) -> np.ndarray:
    masks = np.atleast_2d(np.asarray(masks))
    if masks.ndim != 2 or masks.shape[1] != prepared.model.n_permutable:
        raise ValueError(
            f"masks have {masks.shape[-1]} bits but the model has {prepared.model.n_permutable} "
            "permutable atoms"
        )
    return np.ascontiguousarray(masks != 0, dtype=np.uint8)


def _set_kept(tb: _Tables, masks_dev: Any) -> Any:
    """(m, n_sets) 0/1 in ``dtype``: whether each keep set meets each mask."""
    return (masks_dev.to(tb.dtype) @ tb.keepsets_t > 0.5).to(tb.dtype)


def _norm(tb: _Tables, set_kept: Any) -> Any:
    """DiffPy's N<f(0)>² = (Σf)²/N over each motif's kept atoms (0 for an empty motif)."""
    sk = set_kept.to(torch.float64)
    n = sk @ tb.set_count
    fs = sk @ tb.set_f0
    return torch.where(n > 0, fs * fs / n.clamp(min=1.0), torch.zeros_like(n))


# -------------------------------------------------------------------------------- isotropic


@dataclass(frozen=True)
class _IsoData:
    """Per observed G: numerators' kernel, penalty and ‖g‖² (device tensors)."""

    beta_t: Any  # (n_classes, Z): kernel of g·G_z
    penalty: Any  # (Z,) float64
    g2: float


def _iso_data(
    prepared: PreparedModel, tb: _Tables, g: np.ndarray, restraint: ZoomRestraint, axes: int
) -> _IsoData:
    b, g2 = prepared.project_data(g)
    t = torch
    b_dev = t.as_tensor(b, device=tb.device).to(tb.dtype)
    beta_t = (tb.kernels @ b_dev).T.contiguous()  # (classes, Z)
    penalty = t.as_tensor(axes * restraint.penalty(prepared.zooms), device=tb.device).to(t.float64)
    return _IsoData(beta_t, penalty, float(g2))


def _chi(g2: float, num: Any, den: Any, penalty: Any) -> Any:
    """χ² with the closed-form scale: ‖g‖² - (g·G)²/‖G‖² (‖g‖² where ‖G‖² is 0) + penalty."""
    safe = torch.where(den > 0, den, torch.ones_like(den))
    return torch.where(den > 0, g2 - num * num / safe, torch.full_like(den, g2)) + penalty


def _exact_norms(tb: _Tables, ck: Any, centre: Any) -> Any:
    """Exact ‖G_z‖² of each row of ``ck`` at its grid zoom ``centre`` (one GEMM per zoom: the
    centres cluster on a few grid zooms)."""
    out = torch.empty(len(centre), dtype=torch.float64, device=ck.device)
    for z in torch.unique(centre).tolist():
        rows = torch.nonzero(centre == z).squeeze(1)
        e = ck[rows] @ tb.kernels[z]
        e = e.to(torch.float64)  # fp32 GEMM, fp64 squares and sums (as the numpy engine)
        out[rows] = (e * e).sum(dim=1)
    return out


def _iso_chunk(tb: _Tables, data: _IsoData, masks_dev: Any) -> tuple[Any, Any, Any, Any]:
    """(rwp, scale_c, zoom, DiffPy normalisation) of one chunk of motifs, on the device."""
    t = torch
    sk = _set_kept(tb, masks_dev)
    ck = sk[:, tb.class_a] * sk[:, tb.class_b]  # (m, classes) 0/1
    m = len(ck)
    n_zoom = len(tb.zooms)
    num = (ck @ data.beta_t).to(t.float64)  # (m, Z)
    e = (ck @ tb.node_kernels).reshape(m, tb.lag_t.shape[0], -1)
    e = e.to(t.float64)
    den = (e * e).sum(dim=2) @ tb.lag_t  # (m, Z) interpolated norms
    g2, penalty = data.g2, data.penalty
    centre = _chi(g2, num, den, penalty).argmin(dim=1).clamp(1, n_zoom - 2)
    rows = t.arange(m, device=ck.device)
    # the exact norm at the bracket centre corrects the interpolated norms of the bracket
    correction = _exact_norms(tb, ck, centre) - den[rows, centre]
    offsets = t.tensor([-1, 0, 1], device=ck.device)
    for move in range(MAX_MOVES):  # walk each 3-point bracket until its middle is the minimum
        idx3 = centre[:, None] + offsets
        den3 = den.gather(1, idx3) + correction[:, None]
        num3 = num.gather(1, idx3)
        chi3 = _chi(g2, num3, den3, penalty[idx3])
        step = chi3.argmin(dim=1) - 1
        target = centre + step
        moved = (step != 0) & (target >= 1) & (target <= n_zoom - 2)
        todo = t.nonzero(moved).squeeze(1)
        if not len(todo):
            break
        centre[todo] = target[todo]
        if move < MAX_MOVES - 1:  # after the last move the bracket is not evaluated again
            correction[todo] = _exact_norms(tb, ck[todo], centre[todo]) - den[todo, centre[todo]]
    # parabola through the bracket (uniform grid): vertex offset in units of the grid step
    c_m, c_0, c_p = chi3[:, 0], chi3[:, 1], chi3[:, 2]
    curv = c_m - 2 * c_0 + c_p
    off = t.where(curv > 0, 0.5 * (c_m - c_p) / t.where(curv > 0, curv, 1.0), 0.0)
    off = off.clamp(-1.0, 1.0)
    w = t.stack([0.5 * off * (off - 1), 1 - off * off, 0.5 * off * (off + 1)], dim=1)
    num_v = (w * num3).sum(dim=1)
    den_v = (w * den3).sum(dim=1)
    full = den_v > 0
    den_safe = t.where(full, den_v, t.ones_like(den_v))
    res = t.where(full, g2 - num_v * num_v / den_safe, t.full_like(den_v, g2))
    rwp = t.sqrt(res.clamp(min=0.0) / g2)
    scale_c = t.where(full, num_v / den_safe, t.zeros_like(den_v))
    step_z = tb.zooms[1] - tb.zooms[0]
    zoom = tb.zooms[centre] + off * step_z
    return rwp, scale_c, zoom, _norm(tb, sk)


def _iso_chunk_size(prepared: PreparedModel, device: str) -> int:
    kind = _kind(device)
    return min(ISO_CHUNK[kind], max(64, ELEMENT_BUDGET[kind] // max(1, prepared.n_classes)))


def _run_chunks(one: Callable[[int, int], None], m: int, chunk: int, device: str) -> None:
    """``one(lo, hi)`` for every chunk of ``m`` motifs.

    On a CUDA device, one after the other (each is a few large kernels). On CPU, chunks run
    in :data:`CPU_WORKERS` threads with torch's own thread pool set to one thread for the
    call: on a shared 2-core host torch's two intra-op threads wait for each other at every
    operation (measured under load: the anisotropic fits ran at 3 fits/s with two torch
    threads and 40 fits/s with one), as numba's thread pool did for the numpy engine.
    """
    bounds = [(lo, min(lo + chunk, m)) for lo in range(0, m, chunk)]

    def run(lo: int, hi: int) -> None:
        with torch.inference_mode():  # thread-local: entered in each worker
            one(lo, hi)

    if _kind(device) != "cpu":
        for lo, hi in bounds:
            run(lo, hi)
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        workers = min(CPU_WORKERS, len(bounds))
        if workers <= 1:
            for lo, hi in bounds:
                run(lo, hi)
            return
        with ThreadPoolExecutor(workers, thread_name_prefix="torch-fit") as pool:
            for f in [pool.submit(run, lo, hi) for lo, hi in bounds]:
                f.result()
    finally:
        torch.set_num_threads(before)


def _device_and_dtype(device: str, dtype: Any, default: str) -> tuple[str, Any]:
    t = _require_torch()
    return resolve_device(device), getattr(t, default) if dtype is None else dtype


def _iso_arrays(
    prepared: PreparedModel,
    masks: np.ndarray,
    g: np.ndarray,
    restraint: ZoomRestraint,
    restrained_axes: int,
    device: str,
    dtype: Any,
    chunk: int,
) -> np.ndarray:
    """(4, M): Rwp, scale against the un-normalised kernels, zoom, DiffPy's normalisation."""
    tb = _tables(prepared, device, dtype)
    data = _iso_data(prepared, tb, g, restraint, restrained_axes)
    out = np.empty((4, len(masks)))

    def one(lo: int, hi: int) -> None:
        block = torch.as_tensor(masks[lo:hi], device=device)
        out[:, lo:hi] = torch.stack(_iso_chunk(tb, data, block)).cpu().numpy()

    _run_chunks(one, len(masks), chunk, device)
    return out


def fit_isotropic_torch(
    prepared: PreparedModel,
    masks: np.ndarray,
    g: np.ndarray,
    restraint: ZoomRestraint | None = None,
    restrained_axes: int = 1,
    *,
    device: str = "auto",
    dtype: Any = None,
    chunk: int | None = None,
) -> FitResults:
    """:func:`~motex_stream.fitting.isotropic.fit_isotropic` on a torch device: best scale and
    one zoom per motif, Rwp over the data points (penalty excluded).

    ``dtype``: what the class masks and kernels are multiplied in (default float64; the
    squares and the search are float64 always)."""
    dev, dt = _device_and_dtype(device, dtype, "float64")
    rwp, scale_c, zoom, norm = _iso_arrays(
        prepared,
        _check_masks(prepared, masks),
        g,
        restraint or ZoomRestraint(),
        restrained_axes,
        dev,
        dt,
        chunk or _iso_chunk_size(prepared, dev),
    )
    return FitResults(
        rwp=rwp,
        scale=scale_c * norm,
        zoom=np.repeat(zoom[:, None], 3, axis=1),
        mode="isotropic",
    )


# ------------------------------------------------------------------------------ anisotropic


@dataclass(frozen=True)
class _PairTables:
    """The distance tables and the pairs of the prepared model on one device."""

    delta2: Any  # (C, 3) float64: squared components of each vector class
    pa: Any  # (P,) long: atom indices
    pb: Any
    pair_class: Any  # (P,) long: each pair's vector class
    n_classes: int
    row0: Any  # (C,) long: first table row of each class's kind
    values: Any  # (2·n_kinds·n_d, R): value per distance node, then next value - value
    slopes: Any  # (2·n_kinds·n_d, R): the same for d(value)/dd
    d_lo: float
    step: float
    d_min: float
    d_max: float
    n_d: int


def _pair_tables(prepared: PreparedModel, device: str, dtype: Any) -> _PairTables:
    key = str(("torch-pairs", device, str(dtype)))
    cached = prepared.engine_cache.get(key)
    if isinstance(cached, _PairTables):
        return cached
    t = _require_torch()
    dt = prep_tables(prepared)
    _, n_d, rank = dt.values.shape

    def with_diff(a: np.ndarray) -> Any:
        a = t.as_tensor(a, device=device).to(dtype)
        diff = t.zeros_like(a)
        diff[:, :-1] = a[:, 1:] - a[:, :-1]  # lerp as numba's: a[i] + u·(a[i+1] - a[i])
        return t.cat([a.reshape(-1, rank), diff.reshape(-1, rank)]).contiguous()

    pp = prepared.pairs
    pair_class, class_delta2, class_kind = vector_classes(prepared)  # the numba engine's classes
    tables = _PairTables(
        delta2=t.as_tensor(class_delta2, device=device).to(t.float64),
        pa=t.as_tensor(pp.a, device=device).long(),
        pb=t.as_tensor(pp.b, device=device).long(),
        pair_class=t.as_tensor(pair_class, device=device).long(),
        n_classes=len(class_kind),
        row0=t.as_tensor(class_kind * n_d, device=device),
        values=with_diff(dt.values),
        slopes=with_diff(dt.slopes),
        d_lo=float(dt.d_lo),
        step=float(dt.step),
        d_min=float(dt.d_min),
        d_max=float(dt.d_max),
        n_d=int(n_d),
    )
    prepared.engine_cache[key] = tables
    return tables


class _Evaluator:
    """F(z) and dF/dz of the motifs of one chunk, from their kept vector classes.

    The kept classes of the chunk's motifs (:func:`~motex_stream.fitting.anisotropic.
    vector_classes`: identical pairs, weighted by how many of them a motif keeps) are laid out
    once, motif after motif (squared Cartesian components, first table row and weight of
    each). An evaluation computes each class's zoomed distance and place in the tables, then
    one weighted sum of table rows per motif: ``embedding_bag`` (a fused gather-and-sum, on CPU
    and CUDA alike) with the class weight and the interpolation fraction against the stacked
    table [value; next - value]. Classes whose zoomed distance leaves the tables weigh 0, as
    numba's loop skips them.
    """

    def __init__(self, pt: _PairTables, class_count: Any, dtype: Any):
        self.pt = pt
        self.dtype = dtype
        self.rank = pt.values.shape[1]
        self.n_rows = pt.values.shape[0] // 2
        held = class_count > 0
        motif, cls = torch.nonzero(held, as_tuple=True)  # row-major: motif by motif
        self.count = held.sum(dim=1)
        self.start = torch.cumsum(self.count, 0) - self.count
        self.n = len(self.count)
        self.d2 = pt.delta2.index_select(0, cls)  # (E, 3)
        self.row0 = pt.row0.index_select(0, cls)
        self.weight = class_count[motif, cls].to(dtype)

    def _entries(self, rows: Any, z: Any) -> tuple[Any, Any, Any, Any, Any]:
        """Per kept pair of ``rows``: table row, bag offsets, weight, fraction, dd/dz_a."""
        pt = self.pt
        c = self.count.index_select(0, rows)
        offsets = torch.cumsum(c, 0) - c
        if len(rows) == self.n:  # every motif (rows are always increasing)
            d2, row0, weight = self.d2, self.row0, self.weight
        else:
            shift = torch.repeat_interleave(self.start.index_select(0, rows) - offsets, c)
            idx = shift + torch.arange(len(shift), device=shift.device)
            d2, row0 = self.d2.index_select(0, idx), self.row0.index_select(0, idx)
            weight = self.weight.index_select(0, idx)
        zo = torch.repeat_interleave(z, c, dim=0)  # (E, 3)
        d = torch.sqrt((d2 * zo * zo).sum(dim=1))
        u = (d - pt.d_lo) / pt.step
        i = torch.trunc(u)  # numba's int(): towards zero
        valid = (d >= pt.d_min) & (d <= pt.d_max) & (i >= 0) & (i < pt.n_d - 1)
        row = row0 + i.clamp(0, pt.n_d - 2).long()
        w = valid.to(self.dtype) * weight
        frac = (u - i).to(self.dtype)
        grad = zo * d2 / torch.where(d > 0, d, 1.0)[:, None]  # dd/dz_a
        return row, offsets, w, frac, grad.to(self.dtype)

    def _bags(self, table: Any, row: Any, offsets: Any, w: Any, frac: Any) -> Any:
        """Σ over each bag of w·(table[row] + frac·(table[row + 1] - table[row]))."""
        idx = torch.stack([row, row + self.n_rows], dim=1).reshape(-1)
        weights = torch.stack([w, w * frac], dim=1).reshape(-1)
        return torch.nn.functional.embedding_bag(
            idx, table, 2 * offsets, mode="sum", per_sample_weights=weights
        )

    def value(self, rows: Any, z: Any) -> Any:
        """F at z for ``rows`` (increasing positions in this chunk; one z per row): (n, R)."""
        row, offsets, w, frac, _ = self._entries(rows, z)
        return self._bags(self.pt.values, row, offsets, w, frac)

    def jacobian(self, rows: Any, z: Any) -> Any:
        """dF/dz_a at z for ``rows``: (n, 3, R)."""
        row, offsets, w, frac, grad = self._entries(rows, z)
        return torch.stack(
            [self._bags(self.pt.slopes, row, offsets, w * grad[:, a], frac) for a in range(3)],
            dim=1,
        )


def _penalty(z: Any, restraint: ZoomRestraint) -> tuple[Any, Any]:
    """Residuals and their derivatives of the soft restraint per axis: (n, 3) each."""
    lb, ub, sig = restraint.lower, restraint.upper, restraint.sigma
    res = torch.where(z < lb, (lb - z) / sig, torch.where(z > ub, (z - ub) / sig, 0.0))
    jac = torch.where(z < lb, -1.0 / sig, torch.where(z > ub, 1.0 / sig, 0.0))
    return res, jac


def _dots(f: Any, b: Any) -> tuple[Any, Any]:
    """‖F‖² and b·F per motif in float64, the squares rounded in F's dtype (as numba's
    float32 ``f[k] * f[k]``): χ² = ‖b‖² - (b·F)²/‖F‖² cancels ~2 digits, so this rounding is
    what the two engines' χ² share."""
    return (f * f).to(torch.float64).sum(dim=1), f.to(torch.float64) @ b


def _lm(
    ev: _Evaluator,
    rows: Any,
    z0: Any,
    b: Any,
    bb: float,
    restraint: ZoomRestraint,
    max_iter: int,
) -> tuple[Any, Any, Any, Any]:
    """Levenberg-Marquardt on (s, z1, z2, z3) for every motif of ``rows`` at once.

    Returns (χ², z, s, ‖sF-b‖²) per motif. Each round makes one trial step per running motif;
    a motif's sequence of trials (damping ×10 on failure, ÷10 on success, at most
    :data:`LM_TRIES` per iteration, ``max_iter`` iterations, stop when χ² falls by less than
    :data:`LM_REL_STOP`) is numba's ``_lm``'s.
    """
    t = torch
    f64 = t.float64
    n = len(rows)
    z = z0.clone()
    f = ev.value(rows, z)
    ff, bf = _dots(f, b)
    f = f.to(f64)
    fz = ev.jacobian(rows, z).to(f64)
    ok = ff > 0
    s = t.where(ok, bf / t.where(ok, ff, 1.0), 0.0)
    pen, pj = _penalty(z, restraint)
    chi = t.where(ok, bb - bf * bf / t.where(ok, ff, 1.0) + (pen * pen).sum(dim=1), bb)
    lam = t.full((n,), 1e-3, dtype=f64, device=z.device)
    iters = t.zeros(n, dtype=t.long, device=z.device)
    tries = t.zeros(n, dtype=t.long, device=z.device)
    running = ok.clone()
    jtj = t.zeros(n, 4, 4, dtype=f64, device=z.device)
    jtr = t.zeros(n, 4, dtype=f64, device=z.device)
    stale = ok.clone()  # motifs whose normal equations must be (re)built
    eye = t.eye(4, dtype=f64, device=z.device)
    while bool(running.any()):
        idx = t.nonzero(stale & running).squeeze(1)
        if len(idx):
            si = s[idx, None]
            cols = t.cat([f[idx, None, :], si[:, :, None] * fz[idx]], dim=1)  # (k, 4, R)
            resid = si * f[idx] - b
            jr = t.bmm(cols, resid[:, :, None]).squeeze(2)
            jj = t.bmm(cols, cols.transpose(1, 2))
            jr[:, 1:] += pj[idx] * pen[idx]
            jj[:, 1:, 1:] += t.diag_embed(pj[idx] * pj[idx])
            jtr[idx], jtj[idx] = jr, jj
            stale[idx] = False
        act = t.nonzero(running).squeeze(1)
        a_jtj = jtj[act]
        diag = t.diagonal(a_jtj, dim1=1, dim2=2).clamp(min=1e-30)
        damped = a_jtj + eye * (lam[act, None] * diag)[:, :, None]
        x, info = t.linalg.solve_ex(damped, -jtr[act])
        zt = z[act] + x[:, 1:]
        ft = ev.value(rows[act], zt)
        fft, bft = _dots(ft, b)
        ft = ft.to(f64)
        pent, pjt = _penalty(zt, restraint)
        good = (fft > 0) & (info == 0) & t.isfinite(zt).all(dim=1)
        chit = bb - bft * bft / t.where(good, fft, 1.0) + (pent * pent).sum(dim=1)
        accept = good & (chit < chi[act])
        acc = act[accept]
        rej = act[~accept]
        # rejected: more damping; LM_TRIES failures in one iteration end the motif's fit
        lam[rej] *= 10.0
        tries[rej] += 1
        running[rej[tries[rej] >= LM_TRIES]] = False
        if len(acc):
            ca = chi[acc]
            rel = (ca - chit[accept]) / ca.clamp(min=1e-300)
            z[acc] = zt[accept]
            f[acc] = ft[accept]
            fz[acc] = ev.jacobian(rows[acc], z[acc]).to(f64)
            s[acc] = bft[accept] / fft[accept]
            pen[acc], pj[acc] = pent[accept], pjt[accept]
            chi[acc] = chit[accept]
            ff[acc], bf[acc] = fft[accept], bft[accept]
            lam[acc] = (lam[acc] / 10.0).clamp(min=1e-9)
            iters[acc] += 1
            tries[acc] = 0
            stale[acc] = True
            running[acc[(rel < LM_REL_STOP) | (iters[acc] >= max_iter)]] = False
    res = t.where(ok, bb - bf * bf / t.where(ok, ff, 1.0), bb)
    return chi, z, s, res


def _class_count(tb: _Tables, pt: _PairTables, masks_dev: Any) -> Any:
    """(m, C) float: how many pairs of each vector class each motif keeps (both atoms kept)."""
    kept = (masks_dev.to(tb.dtype) @ tb.atoms_t) > 0.5  # (m, n_atoms)
    pair_kept = (kept[:, pt.pa] & kept[:, pt.pb]).to(torch.float32)
    count = torch.zeros(len(kept), pt.n_classes, device=kept.device)
    return count.index_add_(1, pt.pair_class, pair_kept)


def _aniso_chunk(
    tb: _Tables,
    pt: _PairTables,
    masks_dev: Any,
    z_start: Any,
    b: Any,
    restraint: ZoomRestraint,
    max_iter: int,
    multistart: bool,
) -> tuple[Any, Any, Any]:
    """(z, s, ‖sF-b‖²) of one chunk of motifs."""
    t = torch
    ev = _Evaluator(pt, _class_count(tb, pt, masks_dev), tb.dtype)
    rows = t.arange(ev.n, device=masks_dev.device)
    bb = float((b * b).sum())
    chi, z, s, res = _lm(ev, rows, z_start, b, bb, restraint, max_iter)
    if multistart:
        alt = restraint.upper + 0.5 * restraint.sigma
        fitted = t.nonzero(s != 0.0).squeeze(1)
        for a in range(3):  # axis by axis, each from the best optimum so far (as numba)
            cand = fitted
            zs = z[cand].clone()
            zs[:, a] = alt
            ff, bf = _dots(ev.value(rows[cand], zs), b)
            screen = (ff > 0) & (bb - bf * bf / t.where(ff > 0, ff, 1.0) <= ALT_SCREEN * chi[cand])
            cand, zs = cand[screen], zs[screen]
            if not len(cand):
                continue
            chi2, z2, s2, res2 = _lm(ev, rows[cand], zs, b, bb, restraint, max_iter)
            better = chi2 < chi[cand]
            win = cand[better]
            chi[win], z[win], s[win], res[win] = chi2[better], z2[better], s2[better], res2[better]
    return z, s, res


def fit_anisotropic_torch(
    prepared: PreparedModel,
    masks: np.ndarray,
    g: np.ndarray,
    restraint: ZoomRestraint | None = None,
    max_iter: int = 30,
    multistart: bool = True,
    *,
    device: str = "auto",
    dtype: Any = None,
    chunk: int | None = None,
) -> FitResults:
    """:func:`~motex_stream.fitting.anisotropic.fit_anisotropic` on a torch device: scale and
    three zooms per motif; Rwp over the data points (penalty excluded).

    ``dtype``: what F(z) and dF/dz are summed in (default float32, as the numba engine sums
    them; the Levenberg-Marquardt algebra is float64 always). Float32 sums are not a loss
    here but the point: they are what decides, at the 1e-8 level of χ², where the numba
    engine stops, and summed in float64 the stopping points drift from it by up to 3.6e-5
    in Rwp (1000 reference motifs, measured) against 1.6e-5 for float32.
    """
    t = _require_torch()
    dev, dt = _device_and_dtype(device, dtype, "float32")
    restraint = restraint or ZoomRestraint()
    masks = _check_masks(prepared, masks)
    # every motif starts from its isotropic optimum, all three axes restrained
    _, _, zoom0, norm = _iso_arrays(
        prepared, masks, g, restraint, 3, dev, t.float64, chunk or _iso_chunk_size(prepared, dev)
    )
    z_start = np.repeat(zoom0[:, None], 3, axis=1)
    tb = _tables(prepared, dev, dt)
    pt = _pair_tables(prepared, dev, dt)
    b_np, g2 = prepared.project_data(g)
    b = t.as_tensor(b_np, device=dev).to(t.float64)
    if chunk is None:  # every pair kept by every motif at worst
        per_motif = max(1, len(prepared.pairs.a))
        chunk = min(ANISO_CHUNK[_kind(dev)], max(64, ELEMENT_BUDGET[_kind(dev)] // per_motif))
    m_all = len(masks)
    z = np.empty((m_all, 3))
    s = np.empty(m_all)
    res = np.empty(m_all)

    def one(lo: int, hi: int) -> None:
        parts = _aniso_chunk(
            tb,
            pt,
            t.as_tensor(masks[lo:hi], device=dev),
            t.as_tensor(z_start[lo:hi], device=dev).to(t.float64),
            b,
            restraint,
            max_iter,
            multistart,
        )
        z[lo:hi] = parts[0].cpu().numpy()
        s[lo:hi] = parts[1].cpu().numpy()
        res[lo:hi] = parts[2].cpu().numpy()

    _run_chunks(one, m_all, chunk, dev)
    # the part of g outside the reduced basis is a constant: ‖g‖² - ‖b‖²
    res = res + (g2 - float(b_np @ b_np))
    rwp = np.sqrt(np.clip(res, 0.0, None) / g2)
    # DiffPy's normalisation of the scale, as for the isotropic fits
    return FitResults(rwp=rwp, scale=s * norm, zoom=z, mode="anisotropic")


def fit_torch(
    prepared: PreparedModel, masks: np.ndarray, g: np.ndarray, zoom: str, device: str = "auto"
) -> FitResults:
    """The torch engine's fit for zoom mode ``zoom`` (what ``steps.fit_masks`` dispatches to)."""
    if zoom == "anisotropic":
        return fit_anisotropic_torch(prepared, masks, g, device=device)
    if zoom == "isotropic":
        return fit_isotropic_torch(prepared, masks, g, device=device)
    raise ValueError(f"unknown zoom mode {zoom!r}")
