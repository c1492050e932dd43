"""The command line: --version, analyze outputs, fit on a masks CSV, clear errors."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from motex_stream import __version__
from motex_stream.cli import main
from tests.conftest import KEGGIN


def test_version_comes_from_package_metadata(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"motex-stream {__version__}"
    assert __version__ != "0.0.0+unknown"


def _write_masks(path, masks):
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow([f"w{i}" for i in range(1, masks.shape[1] + 1)])
        w.writerows(masks.astype(int).tolist())


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_fit_command_matches_golden_fits(tmp_path, keggin_gr, golden_fits):
    _, meta = golden_fits
    masks = np.array([case["mask_row"][1:] for case in meta.values()], dtype=bool)
    _write_masks(tmp_path / "masks.csv", masks)
    out = tmp_path / "fits.csv"
    rc = main([
        "fit", str(keggin_gr), "--model", str(KEGGIN / "109725.xyz"), "--masks",
        str(tmp_path / "masks.csv"), "--zoom", "anisotropic", "--qmax", "20", "--out", str(out),
    ])  # fmt: skip
    assert rc == 0
    rows = _rows(out)
    assert list(rows[0])[:7] == ["id", "n_kept", "rwp", "scale", "zoom1", "zoom2", "zoom3"]
    for row, case in zip(rows, meta.values(), strict=True):
        assert float(row["rwp"]) <= case["rwp"] + 1e-4


def test_fit_command_debye_calculator(tmp_path, keggin_gr):
    masks = np.zeros((1, 24), dtype=bool)
    masks[0, ::2] = True
    _write_masks(tmp_path / "masks.csv", masks)
    out_r, out_d = tmp_path / "real.csv", tmp_path / "debye.csv"
    base = ["fit", str(keggin_gr), "--model", str(KEGGIN / "109725.xyz"), "--masks",
            str(tmp_path / "masks.csv"), "--qmax", "20", "--zoom", "anisotropic"]  # fmt: skip
    assert main([*base, "--out", str(out_r)]) == 0
    assert main([*base, "--calculator", "debye", "--out", str(out_d)]) == 0
    rwp_r = float(_rows(out_r)[0]["rwp"])
    rwp_d = float(_rows(out_d)[0]["rwp"])
    # pdf-engine.md: the two calculators differ in shape, so their best Rwp differ
    assert 0 < abs(rwp_r - rwp_d) < 0.2


def test_fit_command_rejects_bad_masks(tmp_path, keggin_gr, capsys):
    (tmp_path / "masks.csv").write_text("w1,w2\n1,0\n")
    rc = main(["fit", str(keggin_gr), "--model", str(KEGGIN / "109725.xyz"), "--masks",
               str(tmp_path / "masks.csv"), "--out", str(tmp_path / "o.csv")])  # fmt: skip
    assert rc == 2
    assert "w1..w24" in capsys.readouterr().err


@pytest.mark.slow
def test_analyze_writes_every_output(tmp_path, keggin_gr):
    out = tmp_path / "out"
    rc = main([
        "analyze", str(keggin_gr), "--model", str(KEGGIN / "109725.xyz"), "--permute", "W",
        "--threshold", "2.5", "--rmin", "1.6", "--rmax", "10", "--qdamp", "0.05",
        "--qbroad", "0.01", "--biso", "0.4", "--catalogue", "3000", "--seed", "0",
        "--qmax", "20", "--out", str(out),
    ])  # fmt: skip
    assert rc == 0
    rows = _rows(out / "contributions.csv")
    assert len(rows) == 24 and rows[0]["element"] == "W"
    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["qmax"] == 20.0
    for name in ("fits.csv", "model_contributions.xyz", "model_contributions.vesta",
                 "shap_summary.png", "rwp_vs_size.png", "contributions.png"):  # fmt: skip
        assert (out / name).stat().st_size > 0


def test_unknown_element_is_a_clear_error(tmp_path, keggin_gr, capsys):
    bad = tmp_path / "bad.xyz"
    bad.write_text("2\n\nQq 0 0 0\nO 1.9 0 0\n")
    rc = main(["analyze", str(keggin_gr), "--model", str(bad), "--permute", "O",
               "--catalogue", "10", "--out", str(tmp_path / "o")])  # fmt: skip
    assert rc == 2
    assert "unknown element" in capsys.readouterr().err


def test_fit_output_joins_to_its_input(tmp_path, keggin_gr):
    """Issue 22 item 8: fits.csv carries each mask's id and bits (analyze's fits.csv layout):
    the input's ``id`` column when it has one, else the input row (0-based)."""
    rng = np.random.default_rng(3)
    masks = rng.random((4, 24)) < 0.6
    with_ids = tmp_path / "with_ids.csv"
    with open(with_ids, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "note", *[f"w{i}" for i in range(1, 25)]])
        for mid, mask in zip(["a7", "b3", "c1", "d9"], masks, strict=True):
            w.writerow([mid, "x", *mask.astype(int).tolist()])
    _write_masks(tmp_path / "plain.csv", masks[::-1])
    base = ["fit", str(keggin_gr), "--model", str(KEGGIN / "109725.xyz"), "--qmax", "20"]
    assert main([*base, "--masks", str(with_ids), "--out", str(tmp_path / "a.csv")]) == 0
    assert (
        main([*base, "--masks", str(tmp_path / "plain.csv"), "--out", str(tmp_path / "b.csv")]) == 0
    )
    a, b = _rows(tmp_path / "a.csv"), _rows(tmp_path / "b.csv")
    header = ["id", "n_kept", "rwp", "scale", "zoom1", "zoom2", "zoom3"]
    assert list(a[0]) == header + [f"w{i}" for i in range(1, 25)]
    assert [r["id"] for r in a] == ["a7", "b3", "c1", "d9"]
    assert [r["id"] for r in b] == ["0", "1", "2", "3"]
    by_mask = {}
    for row in a:
        bits = tuple(int(row[f"w{i}"]) for i in range(1, 25))
        assert int(row["n_kept"]) == sum(bits)
        by_mask[bits] = row
    for row, mask in zip(b, masks[::-1], strict=True):
        bits = tuple(int(row[f"w{i}"]) for i in range(1, 25))
        assert bits == tuple(mask.astype(int).tolist())  # the row's own mask, in input order
        assert row["rwp"] == by_mask[bits]["rwp"]  # same mask, same fit, whatever the order
