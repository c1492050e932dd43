"""Symmetry-equivalent permutable atoms found from sorted distance lists (issue 20)."""

from __future__ import annotations

from pathlib import Path

from motex_stream.stream.sim.series import write_two_motif_model
from motex_stream.structure.starting_model import load_starting_model
from motex_stream.structure.symmetry import equivalence_classes
from tests.symmetric_models import c60, cuboctahedron, keggin_unit


def sizes(path: Path, element: str, **kw: float) -> list[int]:
    return sorted(
        len(c) for c in equivalence_classes(load_starting_model(path, [element], 2.5), **kw)
    )


def test_known_sites(tmp_path: Path) -> None:
    assert sizes(cuboctahedron(tmp_path), "W") == [1, 12]  # centre + 12 vertices
    assert sizes(c60(tmp_path), "C") == [60]  # every C of a buckyball
    keggin = sizes(keggin_unit(tmp_path), "W")
    assert sum(keggin) == 12 and len(keggin) <= 3  # 109725's unit: sites of 4 W


def test_far_away_atoms_do_not_break_a_site(tmp_path: Path) -> None:
    """The two-motif model's W13 vertices sit differently relative to the Keggin unit 40 Å
    away, which no fit sees: within the calculator's range they are one site."""
    path = tmp_path / "two.xyz"
    _, b = write_two_motif_model(path)
    model = load_starting_model(path, ["W"], 2.5)
    assert all(len(c) == 1 for c in equivalence_classes(model)[-12:])
    classes = equivalence_classes(model, cutoff=20.0)
    assert sorted(b[1:].tolist()) in classes  # the 12 vertices (b[0] is the centre)
