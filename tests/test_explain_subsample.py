"""Explaining a large catalogue from a seeded subsample (``explain_rows``, issue 13).

The contribution values of a subsample differ from the whole catalogue's by about the
standard error the report gives (``contribution_se``), and the intervals carry that same
error, so what the report says and what the interval covers agree.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from motex_stream.analysis import steps
from motex_stream.analysis.settings import EXPLAIN_ROWS, ModelSettings
from motex_stream.explain.confidence import sampling_error
from motex_stream.model.features import features
from motex_stream.model.training import train
from tests.conftest import KEGGIN

N_MOTIFS = 20_000
ROWS = 2_000


@pytest.fixture(scope="module")
def explained(fitted_random_109725):
    """One surrogate of 20,000 fitted 109725 motifs, explained whole and on 2,000 rows."""
    masks, rwp = fitted_random_109725(N_MOTIFS, 3)
    trained = train(features(masks), rwp, search=False, seed=0)
    _, whole = steps.explain(trained, masks)
    shap, sub = steps.explain(trained, masks, rows=ROWS, seed=0)
    return masks, rwp, trained, whole, shap, sub


def test_explain_sample_is_seeded_sorted_and_bounded() -> None:
    a = steps.explain_sample(10**6, 1000, 5)
    assert a is not None and len(a) == 1000 and len(np.unique(a)) == 1000
    assert np.all(np.diff(a) > 0) and a[-1] < 10**6
    np.testing.assert_array_equal(a, steps.explain_sample(10**6, 1000, 5))
    assert not np.array_equal(a, steps.explain_sample(10**6, 1000, 6))
    # a catalogue no larger than the bound is explained whole
    assert steps.explain_sample(1000, 1000, 5) is None
    assert steps.explain_sample(1000, None, 5) is None


def test_default_explains_the_paper_catalogues_whole() -> None:
    """Today's analyses (10,000 motifs; the C60 check's 20,000-30,000) are not subsampled,
    so their numbers do not move."""
    settings = ModelSettings(starting_model=KEGGIN / "109725.xyz")
    assert settings.explain_rows == EXPLAIN_ROWS >= 30_000
    for n in (10_000, 20_000, 30_000):
        assert steps.explain_sample(n, settings.explain_rows, 0) is None
    # it does not change a prepared state's fingerprint (the live path never uses it)
    assert settings.fingerprint() == settings.updated(explain_rows=500).fingerprint()


def test_subsample_within_its_reported_error_of_the_whole(explained) -> None:
    masks, _, _, whole, shap, sub = explained
    assert shap.shape == (ROWS, 25)
    assert sub.subsampled and sub.n_explained == ROWS and sub.n_catalogue == N_MOTIFS
    np.testing.assert_array_equal(sub.explained, steps.explain_sample(N_MOTIFS, ROWS, 0))
    np.testing.assert_array_equal(sub.n_kept, masks[sub.explained].sum(axis=0))
    assert not whole.subsampled and whole.n_explained == N_MOTIFS
    se = sampling_error(sub)
    z = (sub.value - whole.value) / se
    # measured: max |z| 2.51, 22 of 24 atoms within 2 se, 16 within 1 se (the subsample is
    # a tenth of the catalogue, so the expected spread of z is sqrt(1 - 0.1) ≈ 0.95)
    assert np.all(np.abs(z) < 4.0), z
    assert np.mean(np.abs(z) < 2.0) >= 0.8, z
    assert np.any(sub.value != whole.value)
    # a tenth of the rows: about sqrt(10) times the error of the whole catalogue's means
    # (measured: median ratio 3.15)
    ratio = np.median(se / sampling_error(whole))
    assert 2.5 < ratio < 4.0, ratio


def test_intervals_carry_the_subsample_error(explained) -> None:
    masks, rwp, trained, _, _, sub = explained
    settings = ModelSettings(starting_model=KEGGIN / "109725.xyz", ci_models=2, ci_rows=500)
    ci = steps.intervals(trained, masks, rwp, sub, settings)
    np.testing.assert_array_equal(ci.sampling_se, sampling_error(sub))
    # the interval's half-width holds the sampling error: at least q·se
    q = 1.6448536269514722  # the normal quantile at 90 %, below every t quantile used
    half = (ci.high - ci.low) / 2
    assert np.all(half >= q * ci.sampling_se * (1 - 1e-12))


def test_analyze_reports_the_subsample_and_its_error(tmp_path, keggin_gr, capsys) -> None:
    """``analyze --explain-rows``: SHAP and features hold the subsample's rows, report.json
    says how many motifs were explained and gives each atom's standard error (the intervals'
    sampling_se), and the summary prints it."""
    from motex_stream.cli import main

    out = tmp_path / "out"
    args = [
        "analyze", str(keggin_gr), "--model", str(KEGGIN / "109725.xyz"), "--permute", "W",
        "--rmin", "1.6", "--rmax", "10", "--qmax", "20", "--catalogue", "3000",
        "--explain-rows", "1000", "--search-calls", "2", "--cv-folds", "2",
        "--ci-models", "2", "--ci-rows", "500", "--no-plots", "--out", str(out),
    ]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "SHAP explained a seeded subsample of 1,000 of 3,000 motifs" in printed
    report = json.loads((out / "report.json").read_text())
    e = report["explain"]
    assert e["motifs"] == 3000 and e["explained"] == 1000 and e["subsampled"] is True
    se = np.array([a["contribution_se"] for a in report["atoms"]])
    assert np.all(se > 0) and e["standard_error"]["max"] == pytest.approx(se.max())
    assert f"max {se.max():.2g}" in printed


def test_run_analysis_subsample_result(keggin_gr) -> None:
    from motex_stream.analysis.pipeline import run_analysis

    settings = ModelSettings(
        starting_model=KEGGIN / "109725.xyz",
        qmax=20.0,
        catalogue_size=2000,
        explain_rows=700,
        search_calls=2,
        cv_folds=2,
        ci_models=2,
        ci_rows=300,
    )
    res = run_analysis(keggin_gr, settings)
    rows = res.contributions.explained
    assert rows is not None and len(rows) == 700
    assert res.shap.shape == (700, 25) and res.features.shape == (700, 25)
    np.testing.assert_array_equal(res.features, features(res.masks[rows]))
    assert len(res.fits) == len(res.masks) == 2000
    assert res.intervals is not None
    np.testing.assert_array_equal(res.intervals.sampling_se, sampling_error(res.contributions))
    # explain_rows at or above the catalogue: every motif, as before
    whole = run_analysis(keggin_gr, settings.updated(explain_rows=2000))
    assert whole.contributions.explained is None and whole.shap.shape == (2000, 25)
