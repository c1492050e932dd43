"""The command line: --version, analyze outputs, fit on a masks CSV, and bad input at the
edges (one clear line, exit code 2, and nothing runs on it)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from motex_stream import __version__
from motex_stream.cli import main
from motex_stream.fitting.grfile import read_gr
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


# ---------------------------------------------------------------- bad input at the edges
XYZ = str(KEGGIN / "109725.xyz")


def _write_gr(path: Path, r: np.ndarray, g: np.ndarray) -> Path:
    np.savetxt(path, np.c_[r, g])
    return path


def _analyze(gr: Path | str, out: Path, *flags: str) -> list[str]:
    return ["analyze", str(gr), "--model", XYZ, "--catalogue", "200", "--out", str(out), *flags]


def _error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--qdamp", "nan"], "--qdamp: should be a finite number"),
        (["--rmax", "inf"], "--rmax: should be a finite number"),
        (
            ["--catalogue", str(10**12)],
            "--catalogue: should be less than or equal to 10000000 (got 1000000000000)",
        ),
        (["--rmin", "12"], "rmin (12.0) must be below rmax (10.0)"),
        (["--biso", "W=0.3"], "biso: no value for element(s) O"),
        (["--permute", "Xx"], "--permute: unknown element(s) Xx"),
    ],
)
def test_bad_settings_are_one_clear_line(tmp_path, keggin_gr, capsys, flags, message) -> None:
    out = tmp_path / "out"
    assert main(_analyze(keggin_gr, out, *flags)) == 2
    err = _error(capsys)
    assert message in err
    assert len(err.splitlines()) == 1
    assert not out.exists(), "nothing may run on a bad input"


def test_data_not_covering_the_fit_range(tmp_path, keggin_gr, capsys) -> None:
    data = read_gr(keggin_gr)
    short = _write_gr(tmp_path / "short.gr", data.r[data.r <= 6.99], data.g[data.r <= 6.99])
    assert main(_analyze(short, tmp_path / "out", "--rmax", "10")) == 2
    err = _error(capsys)
    assert "not the fit range 1.6..10 Å" in err and "6.99" in err


def test_all_zero_g_is_refused_before_fitting(tmp_path, capsys) -> None:
    r = np.round(np.arange(0, 3001) * 0.01, 10)
    zero = _write_gr(tmp_path / "zero.gr", r, np.zeros_like(r))
    assert main(_analyze(zero, tmp_path / "out")) == 2
    assert "G is zero everywhere in the fit range" in _error(capsys)


def test_out_that_is_a_file(tmp_path, keggin_gr, capsys) -> None:
    out = tmp_path / "taken"
    out.write_text("not a folder")
    assert main(_analyze(keggin_gr, out)) == 2
    assert f"--out {out} is a file, not a folder" in _error(capsys)
    assert out.read_text() == "not a folder"


def test_fit_out_that_is_a_folder(tmp_path, keggin_gr, capsys) -> None:
    (tmp_path / "masks.csv").write_text("w1,w2\n1,0\n")
    rc = main(["fit", str(keggin_gr), "--model", XYZ, "--masks", str(tmp_path / "masks.csv"),
               "--out", str(tmp_path)])  # fmt: skip
    assert rc == 2
    assert "is a folder; fit writes one CSV file" in _error(capsys)


def test_one_atom_model(tmp_path, keggin_gr, capsys) -> None:
    one = tmp_path / "one.xyz"
    one.write_text("1\n\nW 0 0 0\n")
    rc = main(["analyze", str(keggin_gr), "--model", str(one), "--out", str(tmp_path / "o")])
    assert rc == 2
    assert "a PDF needs at least two" in _error(capsys)


def test_fit_refuses_flags_it_cannot_honour(tmp_path, keggin_gr, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["fit", str(keggin_gr), "--model", XYZ, "--masks", "m.csv", "--out", "o.csv",
              "--seed", "3"])  # fmt: skip
    assert exc.value.code == 2
    assert "unrecognized arguments: --seed 3" in capsys.readouterr().err
