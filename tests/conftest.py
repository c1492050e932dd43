"""Shared fixtures: bundled data paths and the golden DiffPy-CMI references."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "motex_stream" / "data"
REFERENCE = ROOT / "tests" / "data" / "reference"
KEGGIN = DATA / "keggin"


@pytest.fixture(scope="session")
def keggin_gr() -> Path:
    return KEGGIN / "DanMAX_AlphaKeggin.gr"


@pytest.fixture(scope="session")
def model_109725():
    from motex_stream.structure import load_starting_model

    return load_starting_model(KEGGIN / "109725.xyz", ["W"], 2.5)


@pytest.fixture(scope="session")
def golden_pdf():
    return np.load(REFERENCE / "golden_pdf_curves.npz")


@pytest.fixture(scope="session")
def golden_fits():
    curves = np.load(REFERENCE / "golden_fit_curves.npz")
    meta = json.loads((REFERENCE / "golden_fit_curves_meta.json").read_text())
    return curves, meta


@pytest.fixture(scope="session")
def reference_rwp():
    """The 1000 DiffPy-CMI reference fits: masks (1000, 24), rwp, scale, zooms."""
    with open(REFERENCE / "keggin_109725_rwp.csv") as fh:
        rows = list(csv.DictReader(fh))
    masks = np.array([[int(r[f"w{i}"]) for i in range(1, 25)] for r in rows], dtype=bool)
    rwp = np.array([float(r["rwp"]) for r in rows])
    scale = np.array([float(r["scale"]) for r in rows])
    zoom = np.array([[float(r[f"zoomscale{i}"]) for i in (1, 2, 3)] for r in rows])
    return masks, rwp, scale, zoom


@pytest.fixture(scope="session")
def prepared_109725(golden_fits, model_109725):
    """The batched engine for 109725 on the reference fit grid (qmax 20, as the script sets)."""
    from motex_stream.analysis.steps import default_pdf_settings
    from motex_stream.pdf.batched import prepare_model

    curves, _ = golden_fits
    r = curves["r"]
    return prepare_model(model_109725, default_pdf_settings(r), r)
