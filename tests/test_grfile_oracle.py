"""Our ``.gr`` reader against diffpy.srfit's ``PDFParser``, the reader the reference fits use.

ML-MotEx's reference scripts load data with srfit's parser, so r, G and the header's Q range
must come out identical: not close, identical. diffpy.srfit is a dev dependency (pinned in
constraints.txt) and used nowhere but here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from diffpy.srfit.pdf import PDFParser

from motex_stream.fitting.grfile import read_gr

KEGGIN = Path(__file__).resolve().parents[1] / "motex_stream" / "data" / "keggin"


def _srfit(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, dict[str, object]]:
    parser = PDFParser()
    parser.parseFile(str(path))
    r, g, _dr, dg = parser.getData()
    meta = parser.getMetaData()
    return np.asarray(r), np.asarray(g), None if dg is None else np.asarray(dg), meta


@pytest.mark.parametrize(
    ("name", "n_points", "qmin", "qmax"),
    [
        # the xPDFsuite header: "qmin = 0.7", "qmax = 19.9989799422"
        ("DanMAX_AlphaKeggin.gr", 3001, 0.7, 19.9989799422),
        # the Nyquist-sampled copy is bare columns: neither reader invents a Q range
        ("DanMAX_AlphaKeggin_nyquist.gr", 301, None, None),
    ],
)
def test_bundled_data_read_identically(name: str, n_points: int, qmin, qmax) -> None:  # type: ignore[no-untyped-def]
    path = KEGGIN / name
    r, g, dg, meta = _srfit(path)
    ours = read_gr(path)
    assert len(ours) == r.size == n_points
    np.testing.assert_array_equal(ours.r, r)
    np.testing.assert_array_equal(ours.g, g)
    assert ours.dg is None and dg is None  # two columns: no uncertainties in either
    assert (ours.qmin, ours.qmax) == (meta.get("qmin"), meta.get("qmax")) == (qmin, qmax)
    assert ours.stype == meta.get("stype", "X")


def _write(path: Path, header: list[str], columns: list[np.ndarray]) -> Path:
    rows = [" ".join(f"{v:.12g}" for v in row) for row in zip(*columns, strict=True)]
    path.write_text("\n".join([*header, "#### start data", "#L r G ...", *rows]) + "\n")
    return path


R = np.round(np.arange(1, 501) * 0.02, 10)
G = np.sin(3 * R) * np.exp(-0.1 * R)
HEADER = ["[DEFAULT]", "mode = xray", "qmin = 0.45", "qmax = 24.25", ""]


def test_four_column_file_r_g_dr_dg(tmp_path: Path) -> None:
    """r, G, dr, dG under a header: the same r, G, dG and Q range (dr is dropped by ours)."""
    dg = 0.01 + 0.001 * R
    path = _write(tmp_path / "four.gr", HEADER, [R, G, np.full(R.size, 0.001), dg])
    sr, sg, sdg, meta = _srfit(path)
    ours = read_gr(path)
    np.testing.assert_array_equal(ours.r, sr)
    np.testing.assert_array_equal(ours.g, sg)
    assert ours.dg is not None and sdg is not None
    np.testing.assert_array_equal(ours.dg, sdg)
    assert (ours.qmin, ours.qmax) == (meta["qmin"], meta["qmax"]) == (0.45, 24.25)


def test_three_column_file_r_and_g(tmp_path: Path) -> None:
    """r, G and the Q range agree. (srfit's parser calls a third column dr, ours dG; no fit
    reads either, so only r, G and the header are held to the oracle here.)"""
    path = _write(tmp_path / "three.gr", HEADER, [R, G, 0.01 + 0.001 * R])
    sr, sg, _, meta = _srfit(path)
    ours = read_gr(path)
    np.testing.assert_array_equal(ours.r, sr)
    np.testing.assert_array_equal(ours.g, sg)
    assert (ours.qmin, ours.qmax) == (meta["qmin"], meta["qmax"])
