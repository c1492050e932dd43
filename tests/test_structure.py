"""Starting models: reading, permutable selection, dependent atoms, clear errors."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from motex_stream.structure import StructureError, build_starting_model, load_starting_model
from tests.conftest import DATA, KEGGIN


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
        ("2\n\nW 0 0 0\nO 1.9 0 0\n", ["Mo"], r"\['Mo'\] not in .*bad\.xyz; it holds \['O', 'W'\]"),
        ("2\n\nW 0 0 0\nW 0 0 0\n", ["W"], "duplicate atoms 1 and 2"),
        ("3\n\nO 1 0 0\nW 0 0 0\nO 1 0 0.0004\n", ["W"], "duplicate atoms 1 and 3 .*4.00e-04 Å"),
        ("2\n\nW 0 0 0\n", ["W"], "line 1 says 2 atoms but the file has 1 atom lines"),
        ("2\n\nW 0 0 0\nO 1.9 0 0\nO 0 1.9 0\n", ["W"], "says 2 atoms but .* more .*line 5"),
        ("2\n\nW 0 0 0\nO 1.9 0 0\n2\n\nW 0 0 0\nO 2 0 0\n", ["W"], ":5: a second structure"),
        ("0\n\n", ["W"], "count on line 1 must be at least 1, got 0"),
        ("-3\n\n", ["W"], "count on line 1 must be at least 1, got -3"),
        ("W 0 0 0\n", ["W"], "first line .* must be the atom count"),
        ("2\n\nW 0 0 0\nO a 0 0\n", ["W"], ":4: non-numeric coordinate"),
        ("3\n\nW 0 0 0\n\nO 1.9 0 0\n", ["W"], ":4: expected 'symbol x y z', got ''"),
        ("2\n\nW 0 0 0\nO nan 0 0\n", ["W"], r"atom 2 \(O\) has a non-finite coordinate \(nan"),
        ("2\n\nW 0 0 inf\nO 1.9 0 0\n", ["W"], r"atom 1 \(W\) has a non-finite .*inf"),
        ("2\n\nW 0 0 0\nO -1e300 0 0\n", ["W"], "atom 2 .* within ±1e\\+06"),
        ("2\n\nW 0 0 0\nO 1.9 0 0\n", [], "at least one permutable"),
    ],
)
def test_bad_models_give_clear_errors(tmp_path, content, permute, message):
    p = tmp_path / "bad.xyz"
    p.write_text(content)
    with pytest.raises(StructureError, match=message) as err:
        load_starting_model(p, permute, 2.5)
    # the CLI prints the message as its one line: no newline, and it names the file
    assert "\n" not in str(err.value)
    assert str(p) in str(err.value) or not permute


def test_binary_file_and_bad_threshold_values(tmp_path):
    p = tmp_path / "image.xyz"
    p.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff")
    with pytest.raises(StructureError, match="not a text XYZ file"):
        load_starting_model(p, ["W"], 2.5)
    for threshold in (float("nan"), float("inf"), -1.0):
        with pytest.raises(StructureError, match="finite number > 0"):
            load_starting_model(KEGGIN / "109725.xyz", ["W"], threshold)


def test_build_from_arrays_names_the_bad_atom():
    pos = np.array([[0.0, 0, 0], [1.9, 0, 0], [0, np.nan, 0]])
    with pytest.raises(StructureError, match=r"atom 3 \(O\) has a non-finite"):
        build_starting_model(["W", "O", "O"], pos, ["W"], 2.5, source="memory")
    with pytest.raises(StructureError, match="3 symbols but 2 positions"):
        build_starting_model(["W", "O", "O"], pos[:2], ["W"], 2.5)


def test_trailing_blank_lines_and_extra_columns_are_fine(tmp_path):
    p = tmp_path / "ok.xyz"
    p.write_text("2\ncomment 1 2 3\nW 0 0 0 0.5\nO 1.9 0 0 -0.5\n\n\n")
    m = load_starting_model(p, ["W"], 2.5)
    assert m.symbols == ("W", "O") and m.positions[1].tolist() == [1.9, 0.0, 0.0]


def test_bonds_match_all_pairs_on_a_lattice_with_ties():
    """Neighbour search equals the all-pairs strict ``<`` test, ties at the threshold included."""
    rng = np.random.default_rng(3)
    pos = np.unique(np.round(rng.uniform(0, 5, (300, 3)) * 2) / 2, axis=0)  # 0.5 Å lattice
    symbols = ["W" if i % 3 == 0 else "O" for i in range(len(pos))]
    n_bonds = {}
    for threshold in (0.5, 0.5 + 1e-9, np.sqrt(0.5), 1.0, 1.5):
        m = build_starting_model(symbols, pos, ["W"], threshold)
        diff = pos[m.dependent][:, None, :] - pos[m.permutable][None, :, :]
        expected = np.sqrt((diff**2).sum(-1)) < threshold
        np.testing.assert_array_equal(m.bonded, expected)
        n_bonds[threshold] = int(m.bonded.sum())
    assert n_bonds[0.5] == 0 < n_bonds[0.5 + 1e-9]  # nearest neighbours sit exactly at 0.5 Å


def test_large_cluster_in_linear_memory():
    """12,000 atoms: an all-pairs distance table would take 4.6 GB; the model needs ~30 MB."""
    rng = np.random.default_rng(0)
    side = 23
    grid = np.stack(np.meshgrid(*[np.arange(side)] * 3, indexing="ij"), -1).reshape(-1, 3)
    pos = grid[:12000] * 2.0 + rng.uniform(-0.1, 0.1, (12000, 3))
    symbols = ["W" if i % 4 == 0 else "O" for i in range(len(pos))]
    tracemalloc.start()
    try:
        m = build_starting_model(symbols, pos, ["W"], 2.5)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert m.n_permutable == 3000 and m.bonded.shape == (9000, 3000)
    assert m.bonded.any(axis=1).mean() > 0.5  # most O sit within 2.5 Å of a W
    assert peak < 150 * 2**20, f"peak {peak / 2**20:.0f} MiB"  # measured: 28 MiB


@pytest.mark.parametrize(
    ("path", "permute"),
    [(p, ["Ga"] if p.parent.name == "ga2o3" else ["W"]) for p in sorted(DATA.glob("*/*.xyz"))],
    ids=lambda v: v.name if isinstance(v, Path) else None,
)
def test_xyz_reader_matches_diffpy_structure(path, permute):
    """diffpy.structure (a dev dependency) reads every bundled model to the same atoms."""
    from diffpy.structure import loadStructure

    ref = loadStructure(str(path), fmt="xyz")
    m = load_starting_model(path, permute, 2.5)
    assert list(m.symbols) == [str(e) for e in ref.element]
    np.testing.assert_array_equal(m.positions, ref.xyz_cartn)


def test_missing_file_and_bad_threshold(tmp_path):
    with pytest.raises(StructureError, match="does not exist"):
        load_starting_model(tmp_path / "nope.xyz", ["W"], 2.5)
    with pytest.raises(StructureError, match="threshold"):
        load_starting_model(KEGGIN / "109725.xyz", ["W"], 0.0)
    bad_cif = tmp_path / "bad.cif"
    bad_cif.write_text("data_x\n_cell_length_a 5\n")
    with pytest.raises(StructureError, match=r"bad\.cif: cannot read structure: .+") as err:
        load_starting_model(bad_cif, ["W"], 2.5)
    assert "\n" not in str(err.value)


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
