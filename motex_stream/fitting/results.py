"""Fit results of a batch of motifs, and the Rwp definition they share."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def rwp(g_obs: np.ndarray, g_calc: np.ndarray) -> float:
    """Unweighted Rwp = sqrt(Σ(g_obs - g_calc)² / Σ g_obs²), as ML-MotEx reports it (fraction)."""
    g_obs = np.asarray(g_obs, dtype=float)
    return float(np.sqrt(np.sum((g_obs - g_calc) ** 2) / np.sum(g_obs**2)))


@dataclass(frozen=True)
class FitResults:
    """One row per motif: Rwp (fraction), the refined scale (DiffPy's ``mc``) and zooms."""

    rwp: np.ndarray  # (M,)
    scale: np.ndarray  # (M,)
    zoom: np.ndarray  # (M, 3): the lattice a, b, c factors (all equal in isotropic mode)
    mode: str

    def __len__(self) -> int:
        return len(self.rwp)

    def best(self) -> int:
        return int(np.argmin(self.rwp))
