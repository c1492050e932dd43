"""PDF data files: the reader must give the exact observed points the reference fits used,
read the header facts ML-MotEx takes from the file, and refuse broken files loudly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from motex_stream.fitting.grfile import GrFileError, PDFData, read_gr

ROOT = Path(__file__).resolve().parents[1]
DANMAX = ROOT / "motex_stream/data/keggin/DanMAX_AlphaKeggin.gr"
GA2O3 = ROOT / "motex_stream/data/ga2o3/amorphousFit_Gobs.dat"
GOLDEN = ROOT / "tests/data/reference/golden_fit_curves.npz"


@pytest.fixture(scope="module")
def danmax() -> PDFData:
    return read_gr(DANMAX)


def test_danmax_header(danmax: PDFData) -> None:
    assert danmax.qmin == 0.7
    assert danmax.qmax == pytest.approx(19.9989799422, abs=1e-12)
    assert danmax.composition == "W12O40"
    assert danmax.wavelength == 0.1
    assert danmax.stype == "X"
    assert danmax.dg is None
    assert danmax.path == str(DANMAX)


def test_danmax_grid(danmax: PDFData) -> None:
    assert len(danmax) == 3001
    assert danmax.r[0] == 0.0
    assert danmax.r[-1] == 30.0
    assert danmax.rstep == pytest.approx(0.01)
    assert danmax.g[1] == 1.15625e-05  # first data row after the '#S'/'#L' lines


def test_crop_uses_diffpy_fit_range(danmax: PDFData) -> None:
    cropped = danmax.crop(1.6, 10.0)
    assert len(cropped) == 841
    assert cropped.r[0] == pytest.approx(1.6, abs=1e-12)
    assert cropped.r[-1] == pytest.approx(10.0, abs=1e-12)
    np.testing.assert_allclose(np.diff(cropped.r), 0.01, atol=1e-9)
    # Header facts travel with the cropped data.
    assert (cropped.qmax, cropped.composition, cropped.path) == (
        danmax.qmax,
        danmax.composition,
        danmax.path,
    )


def test_crop_matches_reference_observed_curve(danmax: PDFData) -> None:
    cropped = danmax.crop(1.6, 10.0)
    with np.load(GOLDEN) as golden:
        r_ref, g_ref = golden["r"], golden["gobs"]
    assert r_ref.shape == (841,)
    np.testing.assert_allclose(cropped.r, r_ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(cropped.g, g_ref, rtol=0, atol=1e-12)


def test_crop_rejects_empty_range(danmax: PDFData) -> None:
    with pytest.raises(ValueError):
        danmax.crop(10.0, 1.6)
    with pytest.raises(ValueError):
        danmax.crop(40.0, 50.0)


def test_data_are_read_only(danmax: PDFData) -> None:
    with pytest.raises(ValueError):
        danmax.g[0] = 1.0


def test_headerless_ga2o3_file() -> None:
    data = read_gr(GA2O3)
    assert len(data) == 1422
    assert data.r[0] == pytest.approx(0.79)
    assert data.g[0] == pytest.approx(0.035217)
    assert np.all(np.diff(data.r) > 0)
    assert (data.qmin, data.qmax, data.composition, data.wavelength) == (None, None, None, None)
    assert data.stype == "X"
    assert data.dg is None


def test_three_columns_and_neutron_header(tmp_path: Path) -> None:
    path = tmp_path / "n.gr"
    path.write_text(
        "[DEFAULT]\nmode = neutron\nqmax = 25.5\ncomposition = Bi38O45\n"
        "#### start data\n#S 1\n#L r G dr dG\n1.0 0.5 0 0.01\n1.1 -0.25 0 0.02\n1.2 0.0 0 0.03\n"
    )
    data = read_gr(path)
    assert data.stype == "N"
    assert data.qmax == 25.5
    assert data.qmin is None
    assert data.composition == "Bi38O45"
    np.testing.assert_array_equal(data.g, [0.5, -0.25, 0.0])
    assert data.dg is not None
    np.testing.assert_array_equal(data.dg, [0.01, 0.02, 0.03])
    np.testing.assert_array_equal(data.crop(1.05, 1.2).dg, [0.02, 0.03])


def test_plain_txt_with_column_titles_and_commas(tmp_path: Path) -> None:
    path = tmp_path / "g.txt"
    path.write_text("r, G\n0.5, 1.0\n0.6, 2.0\n")
    data = read_gr(path)
    np.testing.assert_array_equal(data.r, [0.5, 0.6])
    np.testing.assert_array_equal(data.g, [1.0, 2.0])


_HEADER = "qmin = 0.7\nqmax = 20\n#### start data\n#L r G\n"


@pytest.mark.parametrize(
    ("body", "bad_line", "fragment"),
    [
        ("1.0 0.5\n1.1 abc\n", 6, "not a row of numbers"),
        ("1.0 0.5\n1.1 nan\n", 6, "NaN"),
        ("1.0 0.5\n1.1 inf\n", 6, "NaN or infinite"),
        ("1.0 0.5\n1.1\n", 6, "at least 2 columns"),
        ("1.0 0.5\n1.2 0.4\n1.1 0.3\n", 7, "does not increase"),
        ("1.0 0.5\n1.0 0.4\n", 6, "does not increase"),
        ("1.0 0.5\n1.1 0.4 0.1\n", 6, "columns"),
    ],
)
def test_malformed_rows_name_file_and_line(
    tmp_path: Path, body: str, bad_line: int, fragment: str
) -> None:
    path = tmp_path / "broken.gr"
    path.write_text(_HEADER + body)
    with pytest.raises(GrFileError) as info:
        read_gr(path)
    message = str(info.value)
    assert f"broken.gr:{bad_line}:" in message
    assert fragment in message
    assert info.value.line == bad_line
    assert isinstance(info.value, ValueError)


def test_bad_header_value_names_line(tmp_path: Path) -> None:
    path = tmp_path / "hdr.gr"
    path.write_text("qmin = 0.7\nqmax = twenty\n#### start data\n1.0 0.5\n")
    with pytest.raises(GrFileError, match=r"hdr\.gr:2: qmax"):
        read_gr(path)


def test_empty_and_missing_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.gr"
    empty.write_text(_HEADER)
    with pytest.raises(GrFileError, match=r"empty\.gr: no data rows"):
        read_gr(empty)
    with pytest.raises(GrFileError, match=r"missing\.dat"):
        read_gr(tmp_path / "missing.dat")


def test_pdfdata_validates_its_fields() -> None:
    with pytest.raises(ValueError):
        PDFData(np.arange(3.0), np.arange(4.0), None, None, None, None, None)
    with pytest.raises(ValueError):
        PDFData(np.arange(3.0), np.arange(3.0), None, None, None, None, None, stype="E")
