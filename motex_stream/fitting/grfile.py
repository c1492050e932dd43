"""Reading measured PDFs: xPDFsuite / PDFgetX3 ``.gr`` files and plain two/three-column text.

Every Rwp in a catalogue is computed against these numbers, so the reader is strict: a
garbled row, a NaN or an r grid that runs backwards is an error that names the file and line,
never a silently dropped point. The header (``key = value`` lines before ``#### start data``)
is read because ML-MotEx takes Qmin, Qmax and the radiation type from it, as DiffPy's
``PDFParser`` does; files without a header (``.dat``/``.txt`` exports) are just columns.

Columns follow diffpy.srfit's ``PDFParser`` (the test oracle): 2 → r, G; 3 → r, G, dr;
4 → r, G, dr, dG (dr is dropped).
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

# DiffPy's setCalculationRange keeps points within this slack of the requested limits, so a
# grid value like 1.6000000000000001 is not lost to rounding.
CROP_EPS = 1e-8

_START_DATA = re.compile(r"^#+\s*start data\s*$", re.IGNORECASE)
_KEY_VALUE = re.compile(r"^\s*([A-Za-z_][\w.-]*)\s*[=:]\s*(.*?)\s*$")
_FIELD_SPLIT = re.compile(r"[\s,;]+")
_FLOAT_KEYS = ("qmin", "qmax", "wavelength")
_STYPE_BY_MODE = {"xray": "X", "x-ray": "X", "x": "X", "neutron": "N", "n": "N"}


class GrFileError(ValueError):
    """A PDF data file that cannot be read; the message names the file (and line)."""

    def __init__(self, path: str | os.PathLike[str], message: str, line: int | None = None):
        self.path = str(path)
        self.line = line
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.array(a, dtype=float, copy=True)
    a.flags.writeable = False
    return a


@dataclass(frozen=True, eq=False)
class PDFData:
    """A measured reduced PDF G(r) plus the header facts the fit needs.

    ``dg`` is None when the file has no uncertainty column (the fit then weights every
    point equally, as srfit does with dy = 1). ``stype`` is 'X' (X-ray) or 'N' (neutron).
    """

    r: np.ndarray
    g: np.ndarray
    dg: np.ndarray | None
    qmin: float | None
    qmax: float | None
    composition: str | None
    wavelength: float | None
    stype: str = "X"
    path: str = ""

    def __post_init__(self) -> None:
        r, g = _readonly(self.r), _readonly(self.g)
        if r.ndim != 1 or r.shape != g.shape:
            raise ValueError(f"r and g must be 1-D and equally long, got {r.shape}, {g.shape}")
        object.__setattr__(self, "r", r)
        object.__setattr__(self, "g", g)
        if self.dg is not None:
            dg = _readonly(self.dg)
            if dg.shape != r.shape:
                raise ValueError(f"dg has shape {dg.shape}, r has {r.shape}")
            object.__setattr__(self, "dg", dg)
        if self.stype not in ("X", "N"):
            raise ValueError(f"stype must be 'X' or 'N', got {self.stype!r}")

    def __len__(self) -> int:
        return int(self.r.size)

    @property
    def rstep(self) -> float:
        """Mean grid spacing, as srfit's PDF generator derives it from the observed r."""
        if self.r.size < 2:
            raise ValueError("rstep needs at least two points")
        return float((self.r[-1] - self.r[0]) / (self.r.size - 1))

    def crop(self, rmin: float, rmax: float) -> PDFData:
        """Points with ``rmin - 1e-8 <= r <= rmax + 1e-8`` (DiffPy's fit-range rule)."""
        if rmin > rmax:
            raise ValueError(f"crop range is empty: rmin {rmin} > rmax {rmax}")
        keep = (self.r >= rmin - CROP_EPS) & (self.r <= rmax + CROP_EPS)
        if not keep.any():
            raise ValueError(
                f"no data points in {rmin}..{rmax} Å (data cover {self.r[0]}..{self.r[-1]} Å)"
            )
        return replace(
            self,
            r=self.r[keep],
            g=self.g[keep],
            dg=None if self.dg is None else self.dg[keep],
        )


@dataclass
class _Header:
    qmin: float | None = None
    qmax: float | None = None
    wavelength: float | None = None
    composition: str | None = None
    stype: str = "X"


def _parse_header(path: Path, lines: Iterable[tuple[int, str]]) -> _Header:
    """``key = value`` pairs that the fit uses; everything else in the header is ignored."""
    meta = _Header()
    for lineno, raw in lines:
        text = raw.strip()
        if not text or text.startswith(("#", "[", ";")):
            continue
        match = _KEY_VALUE.match(text)
        if match is None:
            continue
        key, value = match.group(1).lower(), match.group(2)
        if key in _FLOAT_KEYS:
            try:
                number = float(value)
            except ValueError:
                raise GrFileError(path, f"{key} = {value!r} is not a number", lineno) from None
            if not math.isfinite(number):
                raise GrFileError(path, f"{key} = {value!r} is not finite", lineno)
            setattr(meta, key, number)
        elif key == "composition":
            meta.composition = value or None
        elif key in ("mode", "stype"):
            stype = _STYPE_BY_MODE.get(value.lower())
            if stype is None:
                raise GrFileError(path, f"unknown radiation {key} = {value!r}", lineno)
            meta.stype = stype
    return meta


def _parse_row(path: Path, lineno: int, text: str) -> list[float]:
    fields = _FIELD_SPLIT.split(text.strip())
    try:
        values = [float(f) for f in fields]
    except ValueError:
        raise GrFileError(path, f"not a row of numbers: {text.strip()[:60]!r}", lineno) from None
    if len(values) < 2:
        raise GrFileError(path, f"need at least 2 columns (r, G), found {len(values)}", lineno)
    if len(values) > 4:
        raise GrFileError(path, f"expected 2-4 columns, found {len(values)}", lineno)
    if not all(math.isfinite(v) for v in values):
        raise GrFileError(path, f"NaN or infinite value: {text.strip()[:60]!r}", lineno)
    return values


def _looks_numeric(text: str) -> bool:
    try:
        float(_FIELD_SPLIT.split(text.strip())[0])
    except ValueError:
        return False
    return True


def read_gr(path: str | os.PathLike[str]) -> PDFData:
    """Read a ``.gr``/``.dat``/``.txt`` PDF file into :class:`PDFData`.

    With a ``#### start data`` marker, lines above it are the header and every non-comment
    line below it must be a data row. Without one, leading non-numeric lines are taken as a
    header (column titles, ``key = value``) and everything from the first numeric row on must
    be data.
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")
    except OSError as exc:
        raise GrFileError(path, f"cannot read file ({exc.strerror or exc})") from exc
    lines = list(enumerate(text.splitlines(), start=1))

    start = next((i for i, (_, line) in enumerate(lines) if _START_DATA.match(line.strip())), None)
    if start is not None:
        header, body = lines[:start], lines[start + 1 :]
    else:
        first = next(
            (
                i
                for i, (_, line) in enumerate(lines)
                if line.strip() and not line.lstrip().startswith("#") and _looks_numeric(line)
            ),
            len(lines),
        )
        header, body = lines[:first], lines[first:]
    meta = _parse_header(path, header)

    rows: list[list[float]] = []
    for lineno, line in body:
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        values = _parse_row(path, lineno, stripped)
        if rows and len(values) != len(rows[0]):
            raise GrFileError(
                path, f"{len(values)} columns where earlier rows have {len(rows[0])}", lineno
            )
        if rows and values[0] <= rows[-1][0]:
            raise GrFileError(
                path, f"r = {values[0]} does not increase (previous r = {rows[-1][0]})", lineno
            )
        rows.append(values)
    if not rows:
        raise GrFileError(path, "no data rows")

    data = np.array(rows, dtype=float)
    dg = data[:, 3] if data.shape[1] > 3 else None  # as srfit: 3rd column dr, 4th dG
    result = PDFData(
        r=data[:, 0],
        g=data[:, 1],
        dg=dg,
        qmin=meta.qmin,
        qmax=meta.qmax,
        composition=meta.composition,
        wavelength=meta.wavelength,
        stype=meta.stype,
        path=str(path),
    )
    logger.debug(
        "read %d points (r %.4g..%.4g Å) from %s", len(result), result.r[0], result.r[-1], path
    )
    return result
