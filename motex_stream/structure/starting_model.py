"""Starting models: the cluster whose atoms ML-MotEx switches on and off.

Atoms split into *permutable* atoms (chosen by element; each motif is a 0/1 mask over them,
in file order) and *dependent* atoms, which are kept iff at least one kept permutable atom lies
strictly closer than the bond threshold. This mirrors the reference ML-MotEx scripts, whose
test is a strict ``<`` on the Euclidean distance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from motex_stream.pdf.formfactors import is_known_element


class StructureError(ValueError):
    """A starting model or an atom selection that ML-MotEx cannot work with."""


@dataclass(frozen=True)
class StartingModel:
    """A discrete cluster plus the permutable/dependent split used to cut motifs from it."""

    symbols: tuple[str, ...]
    positions: np.ndarray  # (n_atoms, 3) Cartesian Å, file order
    permutable: np.ndarray  # indices (file order) of the permutable atoms
    dependent: np.ndarray  # indices (file order) of all other atoms
    threshold: float
    bonded: np.ndarray = field(repr=False)  # (n_dependent, n_permutable) bool, distance < threshold
    source: str = ""

    @property
    def n_atoms(self) -> int:
        return len(self.symbols)

    @property
    def n_permutable(self) -> int:
        return len(self.permutable)

    @property
    def permutable_symbols(self) -> tuple[str, ...]:
        return tuple(self.symbols[i] for i in self.permutable)

    def kept_atoms(self, masks: np.ndarray) -> np.ndarray:
        """Which atoms each motif keeps: (M, n_atoms) bool from (M, n_permutable) 0/1 masks."""
        masks = np.atleast_2d(np.asarray(masks)).astype(bool)
        if masks.shape[1] != self.n_permutable:
            raise StructureError(
                f"mask has {masks.shape[1]} bits but the model has {self.n_permutable} "
                "permutable atoms"
            )
        kept = np.zeros((masks.shape[0], self.n_atoms), dtype=bool)
        kept[:, self.permutable] = masks
        if len(self.dependent):
            kept[:, self.dependent] = (masks.astype(np.uint8) @ self.bonded.T.astype(np.uint8)) > 0
        return kept

    def motif_positions(self, mask: np.ndarray) -> tuple[list[str], np.ndarray]:
        """Symbols and positions of the atoms one motif keeps (file order)."""
        keep = self.kept_atoms(mask)[0]
        return [s for s, k in zip(self.symbols, keep, strict=True) if k], self.positions[keep]


def _read_atoms(path: Path) -> tuple[list[str], np.ndarray]:
    """Read symbols and Cartesian positions; XYZ natively, anything else through ase."""
    if path.suffix.lower() == ".xyz":
        lines = path.read_text().splitlines()
        try:
            n = int(lines[0].split()[0])
        except (IndexError, ValueError) as exc:
            raise StructureError(
                f"{path}: first line of an XYZ file must be the atom count"
            ) from exc
        rows = [ln.split() for ln in lines[2 : 2 + n]]
        if len(rows) != n or any(len(r) < 4 for r in rows):
            raise StructureError(f"{path}: expected {n} atom lines of 'symbol x y z'")
        symbols = [r[0].capitalize() for r in rows]
        try:
            positions = np.array([[float(v) for v in r[1:4]] for r in rows], dtype=float)
        except ValueError as exc:
            raise StructureError(f"{path}: non-numeric coordinate: {exc}") from exc
        return symbols, positions
    try:
        import ase.io

        atoms = ase.io.read(str(path))
    except Exception as exc:  # ase raises many types; the user needs the file and the reason
        raise StructureError(f"{path}: cannot read structure: {exc}") from exc
    return list(atoms.get_chemical_symbols()), np.asarray(atoms.get_positions(), dtype=float)


def build_starting_model(
    symbols: Sequence[str],
    positions: np.ndarray,
    permute: Sequence[str],
    threshold: float,
    source: str = "",
) -> StartingModel:
    """Validate atoms and split them into permutable and dependent atoms."""
    symbols = tuple(str(s) for s in symbols)
    positions = np.asarray(positions, dtype=float).reshape(-1, 3)
    if len(symbols) == 0:
        raise StructureError(f"{source or 'structure'}: no atoms")
    if not np.all(np.isfinite(positions)):
        raise StructureError(f"{source or 'structure'}: non-finite coordinates")
    unknown = sorted({s for s in symbols if not is_known_element(s)})
    if unknown:
        raise StructureError(f"unknown element(s) {unknown} in {source or 'structure'}")
    permute_set = {p.capitalize() for p in permute}
    if not permute_set:
        raise StructureError("choose at least one permutable element (e.g. --permute W)")
    bad = sorted(p for p in permute_set if not is_known_element(p))
    if bad:
        raise StructureError(f"unknown permutable element(s) {bad}")
    missing = sorted(permute_set - set(symbols))
    if missing:
        raise StructureError(
            f"permutable element(s) {missing} not in the model; it holds {sorted(set(symbols))}"
        )
    if not threshold > 0:
        raise StructureError(f"bond threshold must be > 0 Å, got {threshold}")
    diff = positions[:, None, :] - positions[None, :, :]
    dist = np.sqrt((diff**2).sum(-1))
    np.fill_diagonal(dist, np.inf)
    dup = np.argwhere(dist < 1e-3)
    if len(dup):
        i, j = dup[0]
        raise StructureError(
            f"duplicate atoms {i + 1} and {j + 1} (1-based) in {source or 'structure'}: "
            f"{dist[i, j]:.2e} Å apart"
        )
    is_perm = np.array([s in permute_set for s in symbols])
    permutable = np.flatnonzero(is_perm)
    dependent = np.flatnonzero(~is_perm)
    bonded = dist[np.ix_(dependent, permutable)] < threshold
    return StartingModel(
        symbols, positions, permutable, dependent, float(threshold), bonded, source
    )


def load_starting_model(
    path: str | Path, permute: Sequence[str], threshold: float
) -> StartingModel:
    """Read an XYZ or CIF (any ase-readable) cluster and choose its permutable atoms."""
    path = Path(path)
    if not path.is_file():
        raise StructureError(f"starting model {path} does not exist")
    symbols, positions = _read_atoms(path)
    return build_starting_model(symbols, positions, permute, threshold, source=str(path))
