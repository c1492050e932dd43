"""Symmetry-equivalent permutable atoms: the "sites" of a starting model.

Why: in a symmetric starting model (the 12 W of an α-Keggin unit, the 12 vertices of a
cuboctahedron, the 60 C of a buckyball) equivalent atoms are interchangeable for every fit,
so they must get the same contribution value within its interval, and a user reads "these 12
atoms are one site" more easily than 12 numbers. The test is geometric and needs no space
group (ML-MotEx discards symmetry): two permutable atoms are equivalent when their sorted
distances to the atoms of each element agree within ``tol`` Å. That is necessary for a
symmetry operation mapping one onto the other and, for the clusters ML-MotEx is used on, in
practice sufficient. Only distances up to ``cutoff`` count: pairs beyond the PDF calculator's
range never enter a fit (the two-motif test model puts its motifs 40 Å apart), so the 12
vertices of a W13 cluster are one site even though they sit differently relative to a far
away second motif.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from motex_stream.structure.starting_model import StartingModel

#: Å by which two sorted distances may differ for their atoms to be equivalent.
TOL = 0.01


def distance_signatures(model: StartingModel, cutoff: float | None = None) -> list[np.ndarray]:
    """Per permutable atom, its sorted distances (up to ``cutoff`` Å; None: all) to every
    other atom, element by element (elements in sorted order, one block each, concatenated)."""
    pos = np.asarray(model.positions, dtype=float)
    symbols = np.asarray(model.symbols)
    elements = sorted(set(model.symbols))
    out = []
    for i in model.permutable:
        d = np.linalg.norm(pos - pos[i], axis=1)
        others = np.arange(len(pos)) != i
        if cutoff is not None:
            others &= d <= cutoff
        out.append(np.concatenate([np.sort(d[others & (symbols == e)]) for e in elements]))
    return out


def equivalence_classes(
    model: StartingModel, tol: float = TOL, cutoff: float | None = None
) -> list[list[int]]:
    """Classes of symmetry-equivalent permutable atoms, as 0-based indices among the permutable
    atoms (file order), each class sorted, classes ordered by their first atom; every atom is
    in exactly one class (a class of one is an atom without an equivalent).

    Atoms are compared to each class's first atom (|Δd| ≤ ``tol`` for every distance), so the
    classes do not depend on rounding boundaries. ``cutoff``: see the module doc.
    """
    sigs = distance_signatures(model, cutoff)
    classes: list[list[int]] = []
    for k, sig in enumerate(sigs):
        for cls in classes:
            ref = sigs[cls[0]]
            if ref.shape == sig.shape and np.all(np.abs(ref - sig) <= tol):
                cls.append(k)
                break
        else:
            classes.append([k])
    return classes


@dataclass(frozen=True)
class Sites:
    """A model's sites: :func:`equivalence_classes` and the ``cutoff``/``tol`` it was given.

    ``classes`` are 0-based among the permutable atoms, as :func:`equivalence_classes` returns
    them (each sorted, ordered by first atom, every atom in exactly one). The offline outputs
    report them; the live analyzer computes the same classes for its messages.
    """

    classes: list[list[int]]
    cutoff: float | None
    tol: float

    @classmethod
    def of(cls, model: StartingModel, cutoff: float | None = None, tol: float = TOL) -> Sites:
        """The sites of ``model`` with distances up to ``cutoff`` Å (None: all)."""
        return cls(equivalence_classes(model, tol=tol, cutoff=cutoff), cutoff, tol)

    def ids(self, atom_numbers: np.ndarray) -> np.ndarray:
        """Per permutable atom, its site's id: the (1-based file) number of the site's first
        atom, so "site 7" reads as "the site of atom 7". ``atom_numbers``: file number of each
        permutable atom (ascending, as ``model.permutable + 1``)."""
        numbers = np.asarray(atom_numbers, dtype=np.int64)
        out = np.zeros(len(numbers), dtype=np.int64)
        for cls_ in self.classes:
            out[cls_] = numbers[cls_[0]]
        return out

    def equivalent(self, atom_numbers: np.ndarray) -> list[list[int]]:
        """The sites of two or more atoms as lists of file atom numbers: the live message's
        ``structure.equivalent``."""
        numbers = np.asarray(atom_numbers, dtype=np.int64)
        return [numbers[c].tolist() for c in self.classes if len(c) > 1]
