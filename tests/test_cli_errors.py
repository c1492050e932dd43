"""Bad input at the edges: one clear line, exit code 2, and nothing runs on it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from motex_stream.cli import main
from motex_stream.fitting.grfile import read_gr
from tests.conftest import KEGGIN

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
