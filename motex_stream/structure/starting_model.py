"""Starting models: the cluster whose atoms ML-MotEx switches on and off.

Atoms split into *permutable* atoms (chosen by element; each motif is a 0/1 mask over them,
in file order) and *dependent* atoms, which are kept iff at least one kept permutable atom lies
strictly closer than the bond threshold. This mirrors the reference ML-MotEx scripts, whose
test is a strict ``<`` on the Euclidean distance.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ase.data import chemical_symbols
from scipy.spatial import cKDTree

DUPLICATE_DISTANCE = 1e-3  # Å: closer atoms are the same atom written twice
MAX_COORDINATE = 1e6  # Å: beyond this a "coordinate" is a unit mistake (or overflows)


#: The chemical elements, by symbol (ase's table without its placeholder 'X'). Whether the
#: PDF engine has X-ray form factors for each is the engine's question, asked when it is
#: prepared (pdf.formfactors): a structure does not depend on how it will be scattered.
ELEMENTS = frozenset(chemical_symbols) - {"X"}


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


def _read_xyz(path: Path) -> tuple[list[str], np.ndarray]:
    """Symbols and positions of a one-structure XYZ file; every mistake names its line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise StructureError(f"{path}: not a text XYZ file (it holds undecodable bytes)") from None
    try:
        n = int(lines[0].split()[0])
    except (IndexError, ValueError):
        raise StructureError(f"{path}: first line of an XYZ file must be the atom count") from None
    if n < 1:
        raise StructureError(f"{path}: the atom count on line 1 must be at least 1, got {n}")
    atom_lines = list(enumerate(lines[2 : 2 + n], start=3))
    if len(atom_lines) < n:
        found = sum(1 for line in lines[2:] if line.strip())
        raise StructureError(f"{path}: line 1 says {n} atoms but the file has {found} atom lines")
    symbols: list[str] = []
    rows: list[list[float]] = []
    for k, line in atom_lines:
        fields = line.split()
        if len(fields) < 4:
            raise StructureError(f"{path}:{k}: expected 'symbol x y z', got {line.strip()[:60]!r}")
        try:
            rows.append([float(v) for v in fields[1:4]])
        except ValueError:
            raise StructureError(
                f"{path}:{k}: non-numeric coordinate in {line.strip()[:60]!r}"
            ) from None
        symbols.append(fields[0].capitalize())
    after = [(k, line) for k, line in enumerate(lines[2 + n :], start=3 + n) if line.strip()]
    if after:
        k, line = after[0]
        if len(line.split()) == 1 and line.split()[0].isdigit():
            raise StructureError(
                f"{path}:{k}: a second structure starts here; give a file with one structure"
            )
        raise StructureError(
            f"{path}: line 1 says {n} atoms but the file has more atom lines "
            f"(line {k}: {line.strip()[:60]!r}); correct the count"
        )
    return symbols, np.array(rows, dtype=float)


def _read_atoms(path: Path) -> tuple[list[str], np.ndarray]:
    """Read symbols and Cartesian positions; XYZ natively, anything else through ase."""
    if path.suffix.lower() == ".xyz":
        return _read_xyz(path)
    try:
        import ase.io

        atoms = ase.io.read(str(path))
    except Exception as exc:  # ase raises many types; the user needs the file and the reason
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise StructureError(f"{path}: cannot read structure: {reason}") from exc
    return list(atoms.get_chemical_symbols()), np.asarray(atoms.get_positions(), dtype=float)


def _distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distance, summed in x, y, z order (the strict ``<`` tests depend on it)."""
    diff = a - b
    return np.sqrt((diff**2).sum(-1))


def _pairs_closer_than(pos_a: np.ndarray, pos_b: np.ndarray | None, limit: float) -> np.ndarray:
    """(k, 2) index pairs (row of a, row of b) whose distance is strictly below ``limit``.

    Without ``pos_b``: pairs i < j within ``pos_a``. A k-d tree finds the candidates in
    memory linear in the atoms and pairs (an all-pairs table is N² and runs out of memory
    for big clusters); the strict test is then made with one distance formula for every
    candidate, so the tree's own rounding decides nothing.
    """
    reach = limit * (1 + 1e-9) + 1e-12
    tree_a = cKDTree(pos_a)
    if pos_b is None:
        pos_b = pos_a
        pairs = tree_a.query_pairs(reach, output_type="ndarray").astype(np.intp)
    else:
        found = tree_a.sparse_distance_matrix(cKDTree(pos_b), reach, output_type="ndarray")
        pairs = np.stack([found["i"], found["j"]], axis=1).astype(np.intp)
    pairs = pairs.reshape(-1, 2)
    return pairs[_distance(pos_a[pairs[:, 0]], pos_b[pairs[:, 1]]) < limit]


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
    where = source or "structure"
    if len(symbols) == 0:
        raise StructureError(f"{where}: no atoms")
    if len(symbols) != len(positions):
        raise StructureError(f"{where}: {len(symbols)} symbols but {len(positions)} positions")
    bad_rows = np.flatnonzero(~np.all(np.isfinite(positions), axis=1))
    if len(bad_rows):
        i = int(bad_rows[0])
        raise StructureError(
            f"{where}: atom {i + 1} ({symbols[i]}) has a non-finite coordinate "
            f"{tuple(float(x) for x in positions[i])}"
        )
    far = np.flatnonzero(np.abs(positions).max(axis=1) > MAX_COORDINATE)
    if len(far):
        i = int(far[0])
        raise StructureError(
            f"{where}: atom {i + 1} ({symbols[i]}) lies {np.abs(positions[i]).max():.3g} Å from "
            f"the origin; coordinates must be Cartesian Å within ±{MAX_COORDINATE:g}"
        )
    unknown = sorted({s for s in symbols if s not in ELEMENTS})
    if unknown:
        raise StructureError(f"unknown element(s) {unknown} in {where}")
    permute_set = {p.capitalize() for p in permute}
    if not permute_set:
        raise StructureError("choose at least one permutable element (e.g. --permute W)")
    bad = sorted(p for p in permute_set if p not in ELEMENTS)
    if bad:
        raise StructureError(f"unknown permutable element(s) {bad}")
    missing = sorted(permute_set - set(symbols))
    if missing:
        raise StructureError(
            f"permutable element(s) {missing} not in {where}; it holds {sorted(set(symbols))}"
        )
    if not (math.isfinite(threshold) and threshold > 0):
        raise StructureError(f"bond threshold must be a finite number > 0 Å, got {threshold}")
    close = _pairs_closer_than(positions, None, DUPLICATE_DISTANCE)
    if len(close):
        i, j = close[np.lexsort((close[:, 1], close[:, 0]))[0]]
        raise StructureError(
            f"duplicate atoms {i + 1} and {j + 1} (1-based) in {where}: "
            f"{_distance(positions[i], positions[j]):.2e} Å apart"
        )
    is_perm = np.array([s in permute_set for s in symbols])
    permutable = np.flatnonzero(is_perm)
    dependent = np.flatnonzero(~is_perm)
    bonded = np.zeros((len(dependent), len(permutable)), dtype=bool)
    if len(dependent):
        hits = _pairs_closer_than(positions[dependent], positions[permutable], float(threshold))
        bonded[hits[:, 0], hits[:, 1]] = True
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
