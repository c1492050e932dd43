"""Connected units of permutable atoms: how results are checked against 'complete motifs'.

In the α-Keggin starting models the complete W12O40 units are the 12-atom connected
components of the W–W graph (W–W ≤ ~3.9 Å inside a unit; neighbouring units and fragments
are farther apart). The paper's criterion: the k most negative atoms should form complete
units.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse.csgraph import connected_components
from scipy.spatial.distance import cdist

from motex_stream.structure.starting_model import StartingModel


def permutable_units(model: StartingModel, cutoff: float) -> list[np.ndarray]:
    """Connected components (indices among the permutable atoms) at distance < cutoff."""
    pos = model.positions[model.permutable]
    n, labels = connected_components(cdist(pos, pos) < cutoff, directed=False)
    return [np.flatnonzero(labels == i) for i in range(n)]


def mislabelled(selected: np.ndarray, units: list[np.ndarray]) -> int:
    """Atoms in ``selected`` outside the complete units that best cover it.

    The units are taken largest-overlap first until they hold len(selected) atoms; the answer
    is how many selected atoms fall outside them (0 = the selection is exactly whole units).
    """
    chosen = set(int(i) for i in selected)
    k = len(chosen)
    covered: set[int] = set()
    for unit in sorted(units, key=lambda u: -len(chosen & set(u.tolist()))):
        if len(covered) + len(unit) > k:
            continue
        covered |= set(unit.tolist())
    return len(chosen - covered)
