"""X-ray atomic form factors (Waasmaier & Kirfel 1995, neutral atoms), as DiffPy's SFTXray.

f(Q) = c + Σ_i a_i exp(-b_i s²), s = Q/(4π). The real-space PDFCalculator weights each pair by
f_i(0) f_j(0); the Debye calculator uses f(Q) on its Q grid. The coefficients live in a
bundled CSV (one row per neutral element) so the table is data, not code.
"""

from __future__ import annotations

import csv
from functools import lru_cache
from importlib.resources import files

import numpy as np


class UnknownElementError(KeyError):
    """An element symbol with no X-ray form-factor coefficients."""

    def __str__(self) -> str:  # KeyError quotes its message; users want plain text
        return str(self.args[0])


@lru_cache(maxsize=1)
def _table() -> dict[str, tuple[np.ndarray, float, np.ndarray]]:
    text = files("motex_stream.pdf").joinpath("data/waasmaier_kirfel.csv").read_text()
    table: dict[str, tuple[np.ndarray, float, np.ndarray]] = {}
    for row in csv.DictReader(line for line in text.splitlines() if not line.startswith("#")):
        a = np.array([float(row[f"a{i}"]) for i in range(1, 6)])
        b = np.array([float(row[f"b{i}"]) for i in range(1, 6)])
        table[row["symbol"]] = (a, float(row["c"]), b)
    return table


def known_elements() -> list[str]:
    """Symbols with coefficients, in table order."""
    return list(_table())


def is_known_element(symbol: str) -> bool:
    return symbol in _table()


def xray_form_factor(symbol: str, q: np.ndarray | float) -> np.ndarray:
    """f(Q) in electrons for a neutral atom; raises UnknownElementError for unknown symbols."""
    try:
        a, c, b = _table()[symbol]
    except KeyError:
        raise UnknownElementError(
            f"no X-ray form factor for element {symbol!r}; known: {', '.join(known_elements())}"
        ) from None
    s2 = (np.asarray(q, dtype=float) / (4.0 * np.pi)) ** 2
    return c + np.sum(
        a[:, None] * np.exp(-b[:, None] * np.atleast_1d(s2)[None, :]), axis=0
    ).reshape(np.shape(s2))


def xray_f0(symbol: str) -> float:
    """f(Q=0): the only value DiffPy's real-space PDFCalculator uses."""
    return float(xray_form_factor(symbol, 0.0))
