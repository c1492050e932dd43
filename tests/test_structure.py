"""Starting models: reading, permutable selection, dependent atoms, clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from motex_stream.structure import StructureError, load_starting_model
from tests.conftest import KEGGIN


def test_109725_split_and_bonds(model_109725):
    m = model_109725
    assert m.n_atoms == 104 and m.n_permutable == 24
    assert list(m.permutable) == list(range(24))
    n_bonded = m.bonded.sum(axis=1)
    # pdf-engine.md §1: with 2.5 Å, 4 O never kept, 40 with 1 W, 32 with 2, 4 with 3
    assert np.bincount(n_bonded, minlength=4).tolist() == [4, 40, 32, 4]


def test_kept_atoms_follow_the_strict_threshold(model_109725):
    kept = model_109725.kept_atoms(np.eye(24, dtype=bool)[:1])[0]
    assert kept[0] and kept.sum() == 7  # one W and its octahedron of six O


def test_dependent_atoms_use_strict_less_than(tmp_path):
    p = tmp_path / "pair.xyz"
    p.write_text("3\n\nW 0 0 0\nO 2.5 0 0\nO 0 2.4999 0\n")
    m = load_starting_model(p, ["W"], 2.5)
    assert m.kept_atoms(np.array([[1]]))[0].tolist() == [True, False, True]


@pytest.mark.parametrize(
    ("content", "permute", "message"),
    [
        ("2\n\nXx 0 0 0\nO 1 0 0\n", ["O"], "unknown element"),
        ("2\n\nW 0 0 0\nO 1.9 0 0\n", ["Mo"], "not in the model"),
        ("2\n\nW 0 0 0\nW 0 0 0\n", ["W"], "duplicate atoms 1 and 2"),
        ("2\n\nW 0 0 0\n", ["W"], "expected 2 atom lines"),
        ("2\n\nW 0 0 0\nO a 0 0\n", ["W"], "non-numeric"),
        ("2\n\nW 0 0 0\nO 1.9 0 0\n", [], "at least one permutable"),
    ],
)
def test_bad_models_give_clear_errors(tmp_path, content, permute, message):
    p = tmp_path / "bad.xyz"
    p.write_text(content)
    with pytest.raises(StructureError, match=message):
        load_starting_model(p, permute, 2.5)


def test_missing_file_and_bad_threshold(tmp_path):
    with pytest.raises(StructureError, match="does not exist"):
        load_starting_model(tmp_path / "nope.xyz", ["W"], 2.5)
    with pytest.raises(StructureError, match="threshold"):
        load_starting_model(KEGGIN / "109725.xyz", ["W"], 0.0)


def test_cif_through_ase(tmp_path):
    from ase import Atoms

    atoms = Atoms("WO2", positions=[[0, 0, 0], [1.9, 0, 0], [0, 1.9, 0]], cell=[10, 10, 10])
    path = tmp_path / "small.cif"
    atoms.write(path)
    m = load_starting_model(path, ["W"], 2.5)
    assert m.symbols == ("W", "O", "O") and m.kept_atoms(np.array([[1]])).sum() == 3


def test_mask_width_must_match(model_109725):
    with pytest.raises(StructureError, match="24 permutable"):
        model_109725.kept_atoms(np.ones((1, 5)))
