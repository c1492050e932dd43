"""Symmetry-equivalent sites in the offline outputs (issue 20: "these 12 atoms are one site").

``analyze`` reports the classes :func:`~motex_stream.structure.symmetry.equivalence_classes`
finds within the calculator's pair range, the function the live analyzer's messages use:
contributions.csv's last column ``site`` (the number of the site's first atom), report.json's
``sites`` (1-based classes as the live message's ``structure.equivalent``, with the mean and
spread of the values per site) and one printed line per site of two or more atoms.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from motex_stream.analysis.outputs import site_lines, write_outputs
from motex_stream.analysis.pipeline import run_analysis
from motex_stream.analysis.result import AnalysisResult
from motex_stream.analysis.settings import LiveModelSettings, ModelSettings
from motex_stream.analysis.steps import default_pdf_settings
from motex_stream.explain.contributions import AtomContributions
from motex_stream.fitting.grfile import read_gr
from motex_stream.fitting.results import FitResults
from motex_stream.pdf.realspace import realspace_pdf
from motex_stream.stream.frames import Frame
from motex_stream.stream.live.analyzer import MotexFrameAnalyzer
from motex_stream.stream.messages import build_message
from motex_stream.structure.starting_model import load_starting_model
from motex_stream.structure.symmetry import Sites
from tests.symmetric_models import cuboctahedron

KEGGIN = Path(__file__).resolve().parents[1] / "motex_stream" / "data" / "keggin"
#: 109725's 24 W (two α-Keggin orientations): six sites of four, atoms k, k+6, k+12, k+18
KEGGIN_SITES = [[k, k + 6, k + 12, k + 18] for k in range(1, 7)]
#: the W13 cuboctahedron: the centre (atom 1) alone, the 12 vertices (atoms 2-13) one site
W13_SITES = [list(range(2, 14))]

SMALL: dict[str, Any] = {
    "catalogue_size": 400,
    "refit": 400,
    "rounds": 10,
    "search_calls": 3,
    "cv_folds": 2,
    "ci_models": 2,
    "ci_rows": 400,
    "confirm_contexts": 8,
}


def csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


def synthetic_w13(tmp_path: Path, sites: Sites | None) -> AnalysisResult:
    """W13 with made-up values: the 12 vertices −0.08 + seeded noise (sd ~0.01), the centre
    +0.02; no fitting (the writers are what is tested)."""
    model = load_starting_model(cuboctahedron(tmp_path), ["W"], 2.5)
    rng = np.random.default_rng(3)
    value = np.r_[0.02, -0.08 + 0.01 * rng.standard_normal(12)]
    masks = rng.random((50, 13)) < 0.5
    n = masks.sum(axis=0)
    r = np.linspace(1.0, 10.0, 50)
    return AnalysisResult(
        model=model,
        masks=masks,
        fits=FitResults(
            rwp=rng.uniform(0.2, 0.8, 50), scale=np.ones(50), zoom=np.ones((50, 3)), mode="iso"
        ),
        features=np.column_stack([masks, masks.sum(axis=1)]).astype(float),
        shap=np.zeros((50, 14)),
        contributions=AtomContributions(
            value=value,
            spread_kept=np.full(13, 0.01),
            spread_removed=np.full(13, 0.01),
            n_kept=n,
            n_removed=50 - n,
            size_shap_by_size={},
        ),
        test_mae=0.01,
        test_mse=1e-4,
        r=r,
        g_obs=np.sin(r),
        g_best=np.sin(r),
        sites=sites,
    )


@pytest.mark.parametrize("cutoff", [None, 12.4], ids=["found-by-writer", "from-the-run"])
def test_w13_outputs_name_one_site_of_12(tmp_path: Path, cutoff: float | None) -> None:
    model = load_starting_model(cuboctahedron(tmp_path), ["W"], 2.5)
    given = None if cutoff is None else Sites.of(model, cutoff=cutoff)
    result = synthetic_w13(tmp_path, given)
    out = write_outputs(tmp_path / "out", result, plots=False)
    rows = csv_rows(out["contributions.csv"])
    assert list(rows[0])[-1] == "site"  # appended: earlier columns keep their positions
    assert [int(r["site"]) for r in rows] == [1] + [2] * 12
    report = json.loads(out["report.json"].read_text())
    sites = report["sites"]
    assert sites["n_sites"] == 2
    assert sites["equivalent"] == W13_SITES
    assert sites["cutoff"] == cutoff
    (site,) = sites["classes"]
    vertices = result.contributions.value[1:]
    assert site["site"] == 2 and site["atoms"] == W13_SITES[0] and site["n_atoms"] == 12
    assert site["mean"] == pytest.approx(float(vertices.mean()), rel=1e-12)
    assert site["sd"] == pytest.approx(float(vertices.std()), rel=1e-12)
    assert (site["min"], site["max"]) == (float(vertices.min()), float(vertices.max()))
    assert site["mean"] == pytest.approx(-0.081045, abs=1e-6)  # the seeded made-up values
    assert site["sd"] == pytest.approx(0.015115, abs=1e-6)
    assert site["labels"] == {"keep": 0, "remove": 0, "uncertain": 12}  # no intervals
    assert [a["site"] for a in report["atoms"]] == [1] + [2] * 12
    assert site_lines(result) == ["site 2: 12 W (2-13) contribution -0.0810 ± 0.0151; 12 uncertain"]


def test_site_lines_are_capped(tmp_path: Path) -> None:
    """A model with many sites prints the first few and says where the rest are."""
    result = synthetic_w13(
        tmp_path, Sites([[0], *([[1 + 2 * k, 2 + 2 * k] for k in range(6)])], None, 0.01)
    )
    lines = site_lines(result, limit=4)
    assert len(lines) == 5 and lines[0].startswith("site 2: 2 W (2, 3) contribution")
    assert lines[-1] == "... 2 more sites in report.json (sites)"


def symmetric_frame(model_path: Path, element: str) -> tuple[np.ndarray, np.ndarray]:
    """The model's own PDF with 1 % seeded noise."""
    model = load_starting_model(model_path, [element], 2.5)
    r = np.round(np.arange(100, 1501) * 0.01, 10)
    r_calc, g = realspace_pdf(list(model.symbols), model.positions, default_pdf_settings(r))
    g = np.interp(r, r_calc, g)
    return r, g + 0.01 * np.abs(g).max() * np.random.default_rng(7).standard_normal(g.size)


def offline_and_live(
    model_path: Path, r: np.ndarray, g: np.ndarray, tmp_path: Path
) -> tuple[dict[str, Path], AnalysisResult, list[list[int]]]:
    """``analyze``'s outputs of one frame and a live message's ``structure.equivalent`` for
    the same model and settings."""
    live = LiveModelSettings(name="sites", starting_model=str(model_path), permute=["W"], **SMALL)
    shared = {k: v for k, v in live.model_dump().items() if k in ModelSettings.model_fields}
    data = tmp_path / "frame.gr"
    data.write_text("".join(f"{a:.6f} {b:.10g}\n" for a, b in zip(r, g, strict=True)))
    result = run_analysis(data, ModelSettings(**{**shared, "refine_fits": 0}))
    out = write_outputs(tmp_path / "out", result, plots=False)
    analyzer = MotexFrameAnalyzer.prepare(live, Frame("ref", 1, 0.0, r, g), None)
    frame = Frame("run", 1, 0.0, r, g)
    message = build_message(analyzer.analyze(frame), frame)
    return out, result, message["structure"]["equivalent"]


def assert_csv_agrees_with_report(out: dict[str, Path]) -> None:
    rows = csv_rows(out["contributions.csv"])
    report = json.loads(out["report.json"].read_text())
    site_of = {int(r["atom"]): int(r["site"]) for r in rows}
    value = {int(r["atom"]): float(r["contribution"]) for r in rows}
    listed = set()
    for c in report["sites"]["classes"]:
        assert {site_of[a] for a in c["atoms"]} == {c["site"]} and c["site"] == c["atoms"][0]
        v = np.array([value[a] for a in c["atoms"]])
        assert c["mean"] == pytest.approx(v.mean(), rel=1e-6, abs=1e-9)  # csv: 8 digits
        assert c["sd"] == pytest.approx(v.std(), rel=1e-5, abs=1e-9)
        listed.update(c["atoms"])
    # every atom outside a listed site is its own site
    assert all(s == a for a, s in site_of.items() if a not in listed)
    assert [a["site"] for a in report["atoms"]] == [site_of[a["atom"]] for a in report["atoms"]]


@pytest.mark.slow
def test_keggin_109725_sites_offline_are_the_live_sites(tmp_path: Path) -> None:
    """109725's 24 W are six sites of four (k, k+6, k+12, k+18); the odd sites are the
    Keggin unit the DanMAX data favour, so their values are negative, the even ones'
    positive."""
    data = read_gr(KEGGIN / "DanMAX_AlphaKeggin.gr")
    out, result, live = offline_and_live(KEGGIN / "109725.xyz", data.r, data.g, tmp_path)
    report = json.loads(out["report.json"].read_text())
    assert report["sites"]["equivalent"] == live == KEGGIN_SITES
    assert report["sites"]["cutoff"] == pytest.approx(12.4)
    rows = csv_rows(out["contributions.csv"])
    assert [int(r["site"]) for r in rows] == [1, 2, 3, 4, 5, 6] * 4
    assert_csv_agrees_with_report(out)
    means = [c["mean"] for c in report["sites"]["classes"]]
    assert all(m < 0 for m in means[0::2]) and all(m > 0 for m in means[1::2]), means
    lines = site_lines(result)
    assert len(lines) == 6 and lines[0].startswith("site 1: 4 W (1, 7, 13, 19) contribution -0.0")


@pytest.mark.slow
def test_w13_sites_offline_are_the_live_sites(tmp_path: Path) -> None:
    """A cuboctahedron: exactly two sites, the 12 vertices and the centre."""
    model_path = cuboctahedron(tmp_path)
    r, g = symmetric_frame(model_path, "W")
    out, result, live = offline_and_live(model_path, r, g, tmp_path)
    report = json.loads(out["report.json"].read_text())
    assert report["sites"]["n_sites"] == 2
    assert report["sites"]["equivalent"] == live == W13_SITES
    assert [int(r["site"]) for r in csv_rows(out["contributions.csv"])] == [1] + [2] * 12
    assert_csv_agrees_with_report(out)
    assert len(site_lines(result)) == 1
