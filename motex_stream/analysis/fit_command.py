"""`motex-stream fit`: fit user-given masks (CSV columns w1..wN, or .npy/.npz) and write one
row per mask.

Each output row carries the mask's id and its bits, in the layout of ``analyze``'s
``fits.csv`` (``id, n_kept, rwp, scale, zoom1..3, w1..wN``), so a result can be joined to its
input: the id is the input's ``id`` column when it has one (so ``analyze``'s own fits.csv,
filtered, can be refitted and joined back), else the input row, 0-based.

The engine fits ~10^5 masks per second, so reading and writing them must not cost more: both
directions work on whole byte matrices with numpy (no per-cell Python), and an input the fast
reader does not understand (quoted fields, ragged rows, bits written as ``1.0``) is read by
the ``csv`` module instead, which also gives the line-precise errors.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

#: the optional input column whose values identify each mask in the output
ID_COLUMN = "id"
#: significant digits of rwp, scale and zoom in the output (as the former ``%.10g``)
DIGITS = 10
_COMMA, _NL, _CR, _QUOTE = ord(","), ord("\n"), ord("\r"), ord('"')


@contextlib.contextmanager
def without_numpy_hugepages() -> Iterator[None]:
    """numpy's advice to the kernel to back each new array of 4 MB or more with transparent
    huge pages, switched off inside (and restored after).

    Why: where THP is ``madvise`` with ``madvise`` defrag (this project's 2-core host), a
    fault in such fresh memory may first compact memory. `fit` reads and writes through
    fresh arrays of tens of MB (10^6 masks: a 48 MB CSV and its byte matrices), freed and
    allocated again, so each is faulted anew: measured on 10^6 masks (109725, subprocess,
    twice each, alternated) reading took 1.30-1.59 s with the advice and 0.60-0.62 s
    without, writing 1.55-1.57 s and 0.93-0.94 s, the fits the same 6.6-6.7 s. Where the
    setting is missing (another numpy), nothing changes.
    """
    core = getattr(np, "_core", None) or getattr(np, "core", None)
    setter = getattr(getattr(core, "multiarray", None), "_set_madvise_hugepage", None)
    if setter is None:
        yield
        return
    before = setter(False)
    try:
        yield
    finally:
        setter(before)


def read_mask_table(path: Path, n_permutable: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids, masks): ids as a bytes array (``S``), masks (M, N) bool.

    ``.npy``: a (M, N) array of 0/1 (any integer or bool dtype); ``.npz``: ``masks`` (or
    ``masks_packed`` + ``n_permutable``, as analyze's fits.npz) and optionally ``id``.
    Anything else is CSV with header w1..wN and optionally ``id``. Ids default to the row's
    0-based index.
    """
    path = Path(path)
    if path.suffix.lower() in (".npy", ".npz"):
        return _read_mask_array(path, n_permutable)
    raw = path.read_bytes()
    header_end = raw.find(b"\n")
    header_line = raw[: header_end if header_end >= 0 else len(raw)].decode("utf-8-sig")
    fieldnames = next(csv.reader([header_line]), [])
    cols = [f"w{i}" for i in range(1, n_permutable + 1)]
    missing = [c for c in cols if c not in fieldnames]
    if missing:
        raise ValueError(
            f"{path}: needs columns w1..w{n_permutable} (the model has {n_permutable} "
            f"permutable atoms); missing {missing[:5]}"
        )
    fast = _parse_fast(raw, header_end, fieldnames, cols)
    ids, masks = fast if fast is not None else _parse_csv(path, cols)
    if len(masks) == 0:
        raise ValueError(f"{path}: no masks")
    return ids, masks


def _read_mask_array(path: Path, n_permutable: int) -> tuple[np.ndarray, np.ndarray]:
    """Masks from .npy / .npz; the same checks as the CSV path (shape, 0/1 values)."""
    ids = None
    if path.suffix.lower() == ".npz":
        with np.load(path, allow_pickle=False) as z:
            if "masks" in z:
                arr = np.asarray(z["masks"])
            elif "masks_packed" in z:
                n = int(z["n_permutable"]) if "n_permutable" in z else n_permutable
                arr = np.unpackbits(z["masks_packed"], axis=1, count=n)
            else:
                raise ValueError(f"{path}: needs an array 'masks' (or 'masks_packed')")
            if ID_COLUMN in z:
                ids = np.asarray(z[ID_COLUMN]).astype("S")
    else:
        arr = np.load(path, allow_pickle=False)
    if arr.ndim != 2 or arr.shape[1] != n_permutable:
        raise ValueError(
            f"{path}: masks must be (M, {n_permutable}) (the model has {n_permutable} "
            f"permutable atoms); got shape {arr.shape}"
        )
    if arr.dtype != bool and not np.isin(arr, (0, 1)).all():
        raise ValueError(f"{path}: mask bits must be 0 or 1")
    if len(arr) == 0:
        raise ValueError(f"{path}: no masks")
    masks = arr.astype(bool)
    if ids is None:
        ids = row_ids(len(masks))
    elif len(ids) != len(masks):
        raise ValueError(f"{path}: {len(ids)} ids for {len(masks)} masks")
    return ids, masks


def _parse_fast(
    raw: bytes, header_end: int, fieldnames: list[str], cols: list[str]
) -> tuple[np.ndarray, np.ndarray] | None:
    """Vectorised parse of unquoted CSV with single-character 0/1 bits; None: not that shape
    (the caller falls back to the ``csv`` module, which reports the offending line)."""
    if header_end < 0 or b'"' in raw:
        return None
    buf = np.frombuffer(raw, dtype=np.uint8)
    body_start = header_end + 1
    fixed = _parse_fixed_width(buf[body_start:], fieldnames, cols)
    if fixed is not None:
        return fixed
    nl = np.flatnonzero(buf[body_start:] == _NL) + body_start
    if len(buf) > body_start and buf[-1] != _NL:  # no newline after the last row
        nl = np.append(nl, len(buf))
    starts = np.concatenate(([body_start], nl[:-1] + 1)) if len(nl) else nl.copy()
    ends = nl.copy()
    has_cr = (ends > starts) & (buf[np.maximum(ends - 1, 0)] == _CR)
    ends = ends - has_cr
    keep = ends > starts  # csv skips blank lines
    starts, ends = starts[keep], ends[keep]
    ncols = len(fieldnames)
    commas = np.flatnonzero(buf == _COMMA)
    commas = commas[commas > header_end]
    first = np.searchsorted(commas, starts)
    count = np.searchsorted(commas, ends) - first
    if len(starts) and not np.all(count == ncols - 1):
        return None
    # field j of row i spans (comma first[i]+j-1)+1 .. comma first[i]+j (line bounds at ends)
    bounds = np.empty((len(starts), ncols + 1), dtype=np.int64)
    bounds[:, 0] = starts - 1
    if ncols > 1:
        bounds[:, 1:ncols] = commas[first[:, None] + np.arange(ncols - 1)]
    bounds[:, ncols] = ends
    at = [fieldnames.index(c) for c in cols]
    lo, hi = bounds[:, at] + 1, bounds[:, np.array(at) + 1]
    if not np.all(hi - lo == 1):
        return None
    chars = buf[lo]
    if not np.all((chars == ord("0")) | (chars == ord("1"))):
        return None
    masks = chars == ord("1")
    if ID_COLUMN in fieldnames:
        j = fieldnames.index(ID_COLUMN)
        ids = _gather_fields(buf, bounds[:, j] + 1, bounds[:, j + 1])
    else:
        ids = row_ids(len(masks))
    return ids, masks


def _parse_fixed_width(
    body: np.ndarray, fieldnames: list[str], cols: list[str]
) -> tuple[np.ndarray, np.ndarray] | None:
    """The commonest file (every row the same width, e.g. plain w1..wN bits) as one reshape:
    a (M, width) byte matrix whose bit columns are read in place. None: rows differ."""
    if ID_COLUMN in fieldnames or len(body) == 0:
        return None
    width = int(np.argmax(body == _NL)) + 1
    if body[width - 1] != _NL or len(body) % width:
        return None
    mat = body.reshape(-1, width)
    if not np.all(mat[:, -1] == _NL):
        return None
    line = mat[0, : width - 1]
    if line[-1] == _CR:
        line = line[:-1]
    commas = np.flatnonzero(line == _COMMA)
    if len(commas) != len(fieldnames) - 1:
        return None
    bounds = np.concatenate(([-1], commas, [len(line)]))
    at = np.array([fieldnames.index(c) for c in cols])
    if not np.all(bounds[at + 1] - bounds[at] == 2):  # single-character bits
        return None
    # every row has its commas exactly where the first row has them, and no others
    if not (
        np.all(mat[:, commas] == _COMMA)
        and np.all(np.count_nonzero(mat == _COMMA, axis=1) == len(commas))
        and np.all(mat[:, len(line)] == mat[0, len(line)])  # "\r" or "\n" alike
    ):
        return None
    chars = mat[:, bounds[at] + 1]
    if not np.all((chars == ord("0")) | (chars == ord("1"))):
        return None
    masks = chars == ord("1")
    return row_ids(len(masks)), masks


def row_ids(m: int) -> np.ndarray:
    """b"0", b"1", ... b"m-1" as an ``S`` array, without formatting each in Python."""
    return (
        np.ascontiguousarray(_format_ints(np.arange(m), left=True))
        .view(f"S{max(len(str(max(m - 1, 0))), 1)}")
        .ravel()
    )


def _gather_fields(buf: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """The byte fields buf[lo:hi] of every row as one ``S`` array, without a Python loop."""
    width = int((hi - lo).max(initial=0)) or 1
    idx = lo[:, None] + np.arange(width)
    valid = idx < hi[:, None]
    mat = np.where(valid, buf[np.minimum(idx, len(buf) - 1)], 0).astype(np.uint8)
    return np.ascontiguousarray(mat).view(f"S{width}").ravel()


def _parse_csv(path: Path, cols: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The general reader (any CSV the ``csv`` module reads), with line-precise errors."""
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        has_id = ID_COLUMN in (reader.fieldnames or [])
        rows = []
        ids: list[str] = []
        for line, row in enumerate(reader, start=2):
            try:
                bits = [int(float(row[c])) for c in cols]
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{path}:{line}: mask bits must be 0 or 1 ({exc})") from exc
            if any(b not in (0, 1) for b in bits):
                raise ValueError(f"{path}:{line}: mask bits must be 0 or 1")
            rows.append(bits)
            ids.append(str(row[ID_COLUMN]) if has_id else str(len(ids)))
    masks = np.array(rows, dtype=bool).reshape(len(rows), len(cols))
    return np.array([s.encode() for s in ids], dtype="S"), masks


# --------------------------------------------------------------------------- writing


def _format_floats(x: np.ndarray, digits: int = DIGITS) -> np.ndarray:
    """Each float as ``d.ddddddddde±XX`` bytes (``digits`` significant digits), vectorised.

    Returns (M, W) uint8 with NUL padding, which the writer drops. Python's ``%.10g`` costs
    ~1 µs a number, more than the fit itself; this costs a few numpy passes. Non-finite
    values are written ``nan``/``inf``/``-inf``, zero (and |x| < 1e-290) as ``%.10g`` does.
    """
    x = np.asarray(x, dtype=float).ravel()
    m = len(x)
    finite = np.isfinite(x)
    # zero, non-finite and subnormal-range values go through Python formatting (rare)
    special = ~finite | (np.abs(x) < 1e-290)
    ax = np.where(special, 1.0, np.abs(x))
    exp = np.floor(np.log10(ax)).astype(np.int64)
    scaled = np.rint(ax / np.power(10.0, exp - (digits - 1))).astype(np.int64)
    over = scaled >= 10**digits  # 9.9999999996 rounds up to 10.000000000
    scaled = np.where(over, scaled // 10, scaled)
    exp = exp + over
    under = scaled < 10 ** (digits - 1)  # log10 a hair below an exact power of ten
    scaled = np.where(under, scaled * 10, scaled)
    exp = exp - under
    # layout: sign, d, '.', digits-1 digits, 'e', sign, 3 exponent digits
    w = 1 + 1 + 1 + (digits - 1) + 1 + 1 + 3
    out = np.zeros((m, w), dtype=np.uint8)
    out[:, 0] = np.where(x < 0, ord("-"), 0)
    q = scaled.copy()
    for k in range(digits - 1, 0, -1):  # last digit first; scalar divisors are fast
        out[:, 2 + k] = q % 10 + ord("0")
        q //= 10
    out[:, 1] = q + ord("0")
    out[:, 2] = ord(".")
    k = 3 + digits - 1
    out[:, k] = ord("e")
    out[:, k + 1] = np.where(exp < 0, ord("-"), ord("+"))
    ae = np.abs(exp)
    out[:, k + 2] = ae // 100 + ord("0")
    out[:, k + 3] = ae // 10 % 10 + ord("0")
    out[:, k + 4] = ae % 10 + ord("0")
    if special.any():
        for i in np.flatnonzero(special):
            text = f"{float(x[i]):.{digits}g}"
            out[i] = 0
            out[i, : len(text)] = np.frombuffer(text.encode(), dtype=np.uint8)
    return out


def _format_ints(a: np.ndarray, left: bool = False) -> np.ndarray:
    """Non-negative integers as (M, W) uint8 digits, NUL-padded (on the left; ``left``:
    digits moved to the start, as an ``S`` array needs), vectorised."""
    a = np.asarray(a, dtype=np.int64).ravel()
    width = max(len(str(int(a.max(initial=0)))), 1)
    out = np.zeros((len(a), width), dtype=np.uint8)
    q = a.copy()
    for k in range(width - 1, -1, -1):
        out[:, k] = q % 10 + ord("0")
        q //= 10
    n_digits = np.ones(len(a), dtype=np.int64)
    for k in range(1, width):
        n_digits += a >= 10**k
    lead = width - n_digits
    out[np.arange(width)[None, :] < lead[:, None]] = 0
    if left:
        idx = np.arange(width)[None, :] + lead[:, None]
        rows = np.arange(len(a))[:, None]
        out = np.where(idx < width, out[rows, np.minimum(idx, width - 1)], 0).astype(np.uint8)
    return out


def _as_bytes_matrix(s: np.ndarray) -> np.ndarray:
    """An ``S`` array as (M, W) uint8 (NUL-padded)."""
    s = np.ascontiguousarray(s)
    return s.view(np.uint8).reshape(len(s), s.dtype.itemsize)


def format_fit_rows(
    ids: np.ndarray,
    masks: np.ndarray,
    rwp: np.ndarray,
    scale: np.ndarray,
    zoom: np.ndarray,
) -> bytes:
    """The body of fits.csv (no header): ``id,n_kept,rwp,scale,zoom1..3,w1..wN`` per row,
    built in one preallocated byte matrix whose NUL padding is dropped at the end."""
    m, n = masks.shape
    fields = [
        _as_bytes_matrix(np.asarray(ids).astype("S")),
        _format_ints(masks.sum(axis=1)),
        *(_format_floats(c) for c in (rwp, scale, *np.asarray(zoom, float).reshape(m, 3).T)),
    ]
    width = sum(f.shape[1] + 1 for f in fields) + 2 * n
    mat = np.zeros((m, width), dtype=np.uint8)
    at = 0
    for f in fields:
        mat[:, at : at + f.shape[1]] = f
        mat[:, at + f.shape[1]] = _COMMA
        at += f.shape[1] + 1
    mat[:, at::2] = masks.view(np.uint8) if masks.dtype == bool else masks.astype(np.uint8)
    mat[:, at::2] += ord("0")
    mat[:, at + 1 :: 2] = _COMMA
    mat[:, -1] = _NL
    flat = mat.ravel()
    return flat[flat != 0].tobytes()


def write_fits(
    path: Path,
    ids: np.ndarray,
    masks: np.ndarray,
    rwp: np.ndarray,
    scale: np.ndarray,
    zoom: np.ndarray,
    chunk: int = 65536,
) -> None:
    """fits.csv in analyze's layout, formatted in chunks so memory stays bounded."""
    n = masks.shape[1]
    header = [ID_COLUMN, "n_kept", "rwp", "scale", "zoom1", "zoom2", "zoom3"]
    header += [f"w{j}" for j in range(1, n + 1)]
    zoom = np.asarray(zoom, dtype=float).reshape(len(masks), 3)
    with open(path, "wb") as fh:
        fh.write((",".join(header) + "\n").encode())
        for s in range(0, len(masks), chunk):
            e = s + chunk
            fh.write(format_fit_rows(ids[s:e], masks[s:e], rwp[s:e], scale[s:e], zoom[s:e]))


def run_fit_command(args: argparse.Namespace) -> int:
    """Read the masks, fit them, write fits.csv, then print one line of where the time went
    (from process creation when run as the installed command, so the wall is the user's;
    start-up: interpreter, imports, the data and the model). Runs
    :func:`without_numpy_hugepages`. The science modules are imported here, not at module
    import, so reading this module (and ``--help``) stays cheap."""
    with without_numpy_hugepages():
        return _run_fit_command(args)


def _run_fit_command(args: argparse.Namespace) -> int:
    t_run = time.perf_counter()
    started = getattr(args, "started", None)
    started = t_run if started is None else started
    from motex_stream.analysis import steps
    from motex_stream.analysis.settings import ModelSettings
    from motex_stream.cli_flags import settings_from_args

    settings = settings_from_args(args, ModelSettings)
    if args.out.is_dir():
        raise ValueError(f"--out {args.out} is a folder; fit writes one CSV file")
    data = steps.load_fit_data(args.data, settings)
    model = steps.load_model(data.settings)
    t = t_loaded = time.perf_counter()
    ids, masks = read_mask_table(args.masks, model.n_permutable)
    t_read = time.perf_counter() - t
    t = time.perf_counter()
    if args.calculator == "debye":
        from motex_stream.fitting.reference_fit import reference_fit

        t_prepare = 0.0
        fits = reference_fit(model, masks, data.g, data.r, data.pdf, calculator="debye")
    else:
        prepared = steps.prepare_engine(model, data.settings, data.r)
        t_prepare = time.perf_counter() - t
        t = time.perf_counter()
        fits = steps.fit_masks(prepared, masks, data.g, data.settings.zoom, progress=True)
    t_fit = time.perf_counter() - t
    t = time.perf_counter()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_fits(args.out, ids, masks, fits.rwp, fits.scale, fits.zoom)
    t_write = time.perf_counter() - t
    wall = time.perf_counter() - started
    print(
        f"fitted {len(masks):,} masks in {t_fit:.2f} s ({len(masks) / max(t_fit, 1e-9):,.0f} "
        f"fits/s); wall {wall:.2f} s: start-up {t_loaded - started:.2f} s, engine preparation "
        f"{t_prepare:.2f} s, reading {t_read:.2f} s, writing {t_write:.2f} s; wrote {args.out}"
    )
    return 0
