"""The paper's proof of concept (Example 1): find one C60 inside a crowded C60 cell.

Starting model: a whole buckyball plus the caps of its 12 fcc neighbours (a = 14.17 Å)
that lie within 7.4 Å of its centre: 60 + 70 = 130 C atoms (the paper's cell has 132).
Data: the simulated PDF of the single central ball (our engine) plus 1 % noise. ML-MotEx
should give the 60 central atoms the most negative contribution values.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np

from motex_stream.analysis.pipeline import run_analysis
from motex_stream.analysis.settings import ModelSettings
from motex_stream.analysis.steps import default_pdf_settings
from motex_stream.pdf.realspace import realspace_pdf

FCC_A = 14.17  # Å, C60 fcc lattice parameter


def c60_cell(radius: float = 7.4) -> np.ndarray:
    """Positions: the central ball first (60 atoms), then neighbour atoms within ``radius``."""
    from ase.build import molecule

    ball = molecule("C60").positions
    ball = ball - ball.mean(axis=0)
    half = FCC_A / 2
    shifts = {
        tuple(np.roll(np.array([s1 * half, s2 * half, 0.0]), k))
        for s1, s2 in itertools.product((-1, 1), repeat=2)
        for k in range(3)
    }
    others = [ball + np.array(s) for s in sorted(shifts)]
    extra = np.vstack(others)
    return np.vstack([ball, extra[np.linalg.norm(extra, axis=1) < radius]])


def c60_experiment(
    directory: Path, catalogue: int = 30_000, seed: int = 0, noise: float = 0.01
) -> tuple[int, int, float]:
    """Run it; returns (central atoms among the 60 most negative, model atoms, test MAE)."""
    directory.mkdir(parents=True, exist_ok=True)
    pos = c60_cell()
    model_path = directory / "c60_cell.xyz"
    lines = [str(len(pos)), "C60 fcc cell: central ball (atoms 1-60) + neighbour fragments"]
    lines += [f"C {x:.6f} {y:.6f} {z:.6f}" for x, y, z in pos]
    model_path.write_text("\n".join(lines) + "\n")
    r = np.round(np.arange(100, 1001) * 0.01, 10)
    settings = default_pdf_settings(r)
    r_calc, g = realspace_pdf(["C"] * 60, pos[:60], settings)
    g = np.interp(r, r_calc, g)
    rng = np.random.default_rng(seed)
    g = g + noise * np.abs(g).max() * rng.standard_normal(g.size)
    data_path = directory / "c60_single.gr"
    np.savetxt(data_path, np.c_[r, g], header="simulated G(r) of one C60 (motex-stream engine)")
    result = run_analysis(
        data_path,
        ModelSettings(
            starting_model=model_path,
            permute=("C",),
            threshold=1.0,
            rmin=1.0,
            qmin=0.7,
            qmax=20.0,
            catalogue_size=catalogue,
            seed=seed,
        ),
    )
    top = result.contributions.ranking()[:60]
    return int(np.sum(top < 60)), len(pos), result.test_mae
