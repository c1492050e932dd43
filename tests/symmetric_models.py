"""Symmetric starting models with known equivalent atoms, for the symmetry property tests.

Each writer puts an XYZ file in a folder and returns its path: a W13 cuboctahedron (the centre
and 12 equivalent vertices), a C60 buckyball (60 equivalent C) and the α-Keggin W12O40 unit of
109725 (the paper's motif; its 12 W fall into sites of equal sorted distance lists).
"""

from __future__ import annotations

from importlib.resources import files
from itertools import permutations, product
from pathlib import Path

import numpy as np

from motex_stream.stream.sim.series import _cuboctahedron
from motex_stream.structure.starting_model import load_starting_model


def _write(path: Path, symbols: list[str], xyz: np.ndarray, title: str) -> Path:
    lines = [str(len(symbols)), title]
    lines += [f"{s} {x:.6f} {y:.6f} {z:.6f}" for s, (x, y, z) in zip(symbols, xyz, strict=True)]
    path.write_text("\n".join(lines) + "\n")
    return path


def cuboctahedron(directory: Path) -> Path:
    """W13: a centre and 12 vertices at the bcc-W nearest-neighbour distance (2.74 Å)."""
    xyz = _cuboctahedron(2.74)
    return _write(directory / "w13.xyz", ["W"] * len(xyz), xyz, "W13 cuboctahedron")


def c60_positions(bond: float = 1.42) -> np.ndarray:
    """The 60 vertices of a truncated icosahedron with edge ``bond`` Å: the even permutations
    of (0, ±1, ±3φ), (±1, ±(2+φ), ±2φ), (±φ, ±2, ±(2φ+1)) (edge 2 in those units)."""
    phi = (1 + 5**0.5) / 2
    even = [p for p in permutations(range(3)) if _even(p)]
    pts = set()
    for base in [(0, 1, 3 * phi), (1, 2 + phi, 2 * phi), (phi, 2, 2 * phi + 1)]:
        for signs in product((-1, 1), repeat=3):
            v = [s * b for s, b in zip(signs, base, strict=True)]
            for p in even:
                pts.add(tuple(round(v[i], 9) for i in p))
    xyz = np.array(sorted(pts))
    assert len(xyz) == 60
    return xyz * bond / 2


def _even(p: tuple[int, ...]) -> bool:
    inversions = sum(p[i] > p[j] for i in range(3) for j in range(i + 1, 3))
    return inversions % 2 == 0


def c60(directory: Path) -> Path:
    return _write(directory / "c60.xyz", ["C"] * 60, c60_positions(), "C60")


def keggin_unit(directory: Path) -> Path:
    """The α-Keggin W12O40 unit of 109725 (its odd W and their O), as the two-motif series
    cuts it."""
    k = load_starting_model(
        Path(str(files("motex_stream").joinpath("data/keggin/109725.xyz"))), ["W"], 2.5
    )
    odd = np.zeros(k.n_permutable, dtype=bool)
    odd[0::2] = True
    symbols, pos = k.motif_positions(odd)
    order = np.argsort([s != "W" for s in symbols], kind="stable")  # W first
    return _write(
        directory / "keggin.xyz", [symbols[i] for i in order], pos[order], "alpha-Keggin W12O40"
    )
