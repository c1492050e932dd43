"""X-ray form factors: the bundled Waasmaier & Kirfel table must reproduce the numbers that
DiffPy's SFTXray uses, since every Rwp we compare with the paper depends on f(0)."""

from __future__ import annotations

import numpy as np
import pytest

from motex_stream.pdf.formfactors import (
    UnknownElementError,
    is_known_element,
    known_elements,
    xray_f0,
    xray_form_factor,
)

# Z for a spread of elements across the table (light, transition metals, heavy, actinides).
_Z = {"H": 1, "C": 6, "O": 8, "Si": 14, "Fe": 26, "Ga": 31, "Mo": 42, "Bi": 83, "U": 92, "Cf": 98}


def test_table_covers_all_neutral_elements_h_to_cf() -> None:
    elements = known_elements()
    assert len(elements) == 98
    assert elements[0] == "H"
    assert elements[-1] == "Cf"
    # Only neutral atoms: no ion labels such as 'W6+' or 'O2-' and no 'val' entries.
    assert all(symbol.isalpha() and len(symbol) <= 2 for symbol in elements)


def test_w_and_o_match_pdf_engine_spec_exactly() -> None:
    assert xray_f0("W") == pytest.approx(73.963574, abs=1e-9)
    assert xray_f0("O") == pytest.approx(7.999706, abs=1e-9)


@pytest.mark.parametrize(("symbol", "z"), sorted(_Z.items()))
def test_f0_close_to_atomic_number(symbol: str, z: int) -> None:
    assert xray_f0(symbol) == pytest.approx(z, abs=0.1)


def test_every_element_f0_within_fit_tolerance_of_z() -> None:
    # The 5-Gaussian fit is good to a few hundredths of an electron at Q=0; a typo in the
    # table (shifted digit, swapped column) would push an element far outside this.
    for z, symbol in enumerate(known_elements(), start=1):
        assert abs(xray_f0(symbol) - z) < 0.05, symbol


def test_known_values_of_c_and_ga() -> None:
    assert xray_f0("C") == pytest.approx(6.0, abs=0.005)
    assert xray_f0("Ga") == pytest.approx(31.0, abs=0.02)


def test_unknown_symbol_raises_with_readable_message() -> None:
    assert not is_known_element("Xx")
    with pytest.raises(UnknownElementError) as info:
        xray_form_factor("Xx", 0.0)
    assert "Xx" in str(info.value)
    # Ions are not in the neutral table; DiffPy matches symbols exactly too.
    with pytest.raises(UnknownElementError):
        xray_f0("W6+")


@pytest.mark.parametrize("symbol", ["H", "O", "Ga", "W", "U"])
def test_form_factor_decreases_with_q(symbol: str) -> None:
    q = np.linspace(0.0, 20.0, 401)
    f = xray_form_factor(symbol, q)
    assert f.shape == q.shape
    assert np.all(np.diff(f) < 0)
    assert f[-1] > 0.0


def test_scalar_and_array_inputs_agree() -> None:
    q = np.array([0.0, 5.0, 12.5])
    f = xray_form_factor("W", q)
    assert np.ndim(xray_form_factor("W", 5.0)) == 0
    np.testing.assert_allclose([float(xray_form_factor("W", x)) for x in q], f, rtol=0, atol=0)


def test_an_element_without_form_factors_is_a_structure_the_engine_refuses(tmp_path) -> None:
    """The structure layer knows the chemical elements; whether X-rays have coefficients for
    one is the engine's question (the structure no longer imports the PDF layer to ask it).
    Einsteinium is an element the Waasmaier-Kirfel table stops short of: the model loads, and
    preparing the engine says which element has no form factor."""
    from motex_stream.analysis import steps
    from motex_stream.analysis.settings import ModelSettings
    from motex_stream.structure.starting_model import load_starting_model

    path = tmp_path / "es.xyz"
    path.write_text("3\n\nW 0 0 0\nW 3 0 0\nEs 0 2 0\n")
    model = load_starting_model(path, ["W"], 2.5)
    assert model.symbols == ("W", "W", "Es") and not is_known_element("Es")
    settings = ModelSettings(starting_model=str(path), permute=["W"]).with_q_range(0.8, 20.0)
    with pytest.raises(UnknownElementError, match="no X-ray form factor for element 'Es'"):
        steps.prepare_engine(model, settings, np.arange(1.6, 20.0, 0.01))
