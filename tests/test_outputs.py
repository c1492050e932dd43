"""Output writers of the offline analysis, on a real Keggin starting model and synthetic fits.

SHAP and fitting are not exercised here (they have their own tests): the point is that every
file a user opens has the right content, atom numbering and shape.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import ase.io
import numpy as np
import pytest

from motex_stream.analysis.jsonable import to_jsonable
from motex_stream.analysis.outputs import contribution_ranks, write_outputs
from motex_stream.analysis.result import AnalysisResult
from motex_stream.explain.contributions import AtomContributions
from motex_stream.fitting.results import FitResults
from motex_stream.structure import load_starting_model

KEGGIN = Path(__file__).resolve().parents[1] / "motex_stream" / "data" / "keggin" / "109725.xyz"
N_MOTIFS = 300


@pytest.fixture(scope="module")
def result() -> AnalysisResult:
    """A small but complete result: random masks, Rwp lowest when the first 12 W are kept."""
    model = load_starting_model(KEGGIN, ["W"], 2.5)
    n = model.n_permutable
    rng = np.random.default_rng(1)
    sizes = rng.integers(1, n + 1, N_MOTIFS)
    masks = np.zeros((N_MOTIFS, n), dtype=bool)
    for row, k in zip(masks, sizes, strict=True):
        row[rng.choice(n, k, replace=False)] = True
    target = np.arange(n) < n // 2
    rwp = 0.2 + 0.6 * (masks != target).mean(axis=1) + rng.normal(0, 0.01, N_MOTIFS)
    zoom = np.repeat(rng.uniform(0.99, 1.01, (N_MOTIFS, 1)), 3, axis=1)
    fits = FitResults(rwp=rwp, scale=rng.uniform(0.5, 1.5, N_MOTIFS), zoom=zoom, mode="isotropic")
    features = np.column_stack([masks.astype(float), masks.sum(axis=1)])
    shap = (masks - 0.5) * np.where(target, -0.05, 0.05) + rng.normal(0, 0.005, masks.shape)
    shap = np.column_stack([shap, rng.normal(0, 0.01, N_MOTIFS)])
    value = np.where(target, -1.0, 1.0) * rng.uniform(0.01, 0.05, n)
    contributions = AtomContributions(
        value=value,
        spread_kept=rng.uniform(0.001, 0.01, n),
        spread_removed=rng.uniform(0.001, 0.01, n),
        n_kept=masks.sum(axis=0),
        n_removed=(~masks).sum(axis=0),
        size_shap_by_size={int(k): float(k) * 1e-3 for k in np.unique(sizes)},
    )
    r = np.linspace(1.6, 10.0, 400)
    g_obs = np.sin(3 * r) * np.exp(-0.2 * r)
    return AnalysisResult(
        model=model,
        masks=masks,
        fits=fits,
        features=features,
        shap=shap,
        contributions=contributions,
        test_mae=np.float64(0.012),
        test_mse=np.float32(2.5e-4),
        r=r,
        g_obs=g_obs,
        g_best=0.9 * g_obs,
        settings={"permute": ("W",), "threshold": 2.5, "qmin": None, "seed": np.int64(0)},
        timings={"fit": 1.5, "train": np.float64(0.25)},
        versions={"numpy": np.__version__},
        extra={"engine": {"rank": np.int32(7), "nan": float("nan")}},
    )


@pytest.fixture(scope="module")
def written(result: AnalysisResult, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_outputs(tmp_path_factory.mktemp("out") / "nested", result)


def test_contributions_csv(result: AnalysisResult, written: dict[str, Path]) -> None:
    with written["contributions.csv"].open() as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == [
        "atom",
        "element",
        "contribution",
        "spread_kept",
        "spread_removed",
        "rank",
        "ci_low",
        "ci_high",
        "label",
        "refined",
        "toggle_rwp_change",
        "site",  # symmetry-equivalent atoms: 109725's W k, k+6, k+12, k+18 (tests/test_sites.py)
    ]
    body = rows[1:]
    assert len(body) == 24
    assert [int(r[0]) for r in body] == list(range(1, 25))
    assert {r[1] for r in body} == {"W"}
    values = np.array([float(r[2]) for r in body])
    np.testing.assert_allclose(values, result.contributions.value, rtol=1e-7)
    ranks = np.array([int(r[5]) for r in body])
    assert sorted(ranks) == list(range(1, 25))
    # rank 1 is the most negative contribution, and ranks follow the sorted values
    assert values[ranks == 1][0] == values.min()
    np.testing.assert_array_equal(np.argsort(ranks), np.argsort(values))
    assert [int(r[11]) for r in body] == [1, 2, 3, 4, 5, 6] * 4


def test_fits_csv_and_npz(result: AnalysisResult, written: dict[str, Path]) -> None:
    with written["fits.csv"].open() as fh:
        rows = list(csv.reader(fh))
    header = rows[0]
    assert header[:7] == ["id", "n_kept", "rwp", "scale", "zoom1", "zoom2", "zoom3"]
    assert header[7:] == [f"w{i}" for i in range(1, 25)]
    assert len(rows) == N_MOTIFS + 1
    bits = np.array([[int(v) for v in r[7:]] for r in rows[1:]], dtype=bool)
    np.testing.assert_array_equal(bits, result.masks)
    assert [int(r[1]) for r in rows[1:]] == result.masks.sum(axis=1).tolist()
    np.testing.assert_allclose([float(r[2]) for r in rows[1:]], result.fits.rwp, rtol=1e-7)

    with np.load(written["fits.npz"]) as z:
        n = int(z["n_permutable"])
        masks = np.unpackbits(z["masks_packed"], axis=1, count=n).astype(bool)
        np.testing.assert_array_equal(masks, result.masks)
        np.testing.assert_array_equal(z["rwp"], result.fits.rwp)
        assert z["zoom"].shape == (N_MOTIFS, 3)
        assert str(z["mode"]) == "isotropic"


def test_report(result: AnalysisResult, written: dict[str, Path]) -> None:
    report = json.loads(written["report.json"].read_text())
    best = report["best_motif"]
    assert best["rwp"] == pytest.approx(float(result.fits.rwp.min()))
    assert best["id"] == int(np.argmin(result.fits.rwp))
    mask = np.array(best["mask"], dtype=bool)
    np.testing.assert_array_equal(mask, result.masks[best["id"]])
    assert best["atoms_kept"] == (np.flatnonzero(mask) + 1).tolist()  # W are atoms 1..24
    assert len(best["zoom"]) == 3
    assert report["n_motifs"] == N_MOTIFS
    assert report["fit_mode"] == "isotropic"
    assert report["test_mae"] == pytest.approx(0.012)
    assert report["settings"]["seed"] == 0
    assert report["extra"]["engine"] == {"rank": 7, "nan": None}
    assert report["timings"]["train"] == pytest.approx(0.25)
    top = report["top_atoms"]
    assert len(top) == report["top_k"] == 12
    assert [t["rank"] for t in top] == list(range(1, 13))
    assert {t["atom"] for t in top} == set(range(1, 13))  # the synthetic motif


def test_extxyz(result: AnalysisResult, written: dict[str, Path]) -> None:
    path = written["model_contributions.xyz"]
    assert "contribution:R:1" in path.read_text().splitlines()[1]
    atoms = ase.io.read(path)
    assert len(atoms) == 104
    np.testing.assert_allclose(atoms.get_positions(), result.model.positions, atol=1e-6)
    contrib = atoms.arrays["contribution"]
    np.testing.assert_allclose(
        contrib[result.model.permutable], result.contributions.value, atol=1e-7
    )  # extxyz keeps 8 decimals
    assert np.all(contrib[result.model.dependent] == 0.0)
    assert atoms.arrays["permutable"].sum() == 24


def test_vesta(result: AnalysisResult, written: dict[str, Path]) -> None:
    lines = written["model_contributions.vesta"].read_text().splitlines()
    assert lines[0].startswith("#VESTA_FORMAT_VERSION")

    def block(name: str) -> list[str]:
        start = lines.index(name) + 1
        end = next(i for i in range(start, len(lines)) if lines[i].split()[:1] == ["0"])
        return lines[start:end]

    sitet = block("SITET")
    assert len(sitet) == 104
    struc = block("STRUC")
    assert len(struc) == 2 * 104
    frac = np.array([[float(v) for v in ln.split()[4:7]] for ln in struc[::2]])
    assert np.all((frac > 0) & (frac < 1))  # cluster sits inside the P1 box
    rgb = {int(ln.split()[0]): tuple(int(v) for v in ln.split()[3:6]) for ln in sitet}
    grey = rgb[int(result.model.dependent[0]) + 1]
    assert all(rgb[int(i) + 1] == grey for i in result.model.dependent)
    most_negative = int(np.argmin(result.contributions.value))
    r, _, b = rgb[int(result.model.permutable[most_negative]) + 1]
    assert b > r  # blue end of the diverging scale helps the fit
    most_positive = int(np.argmax(result.contributions.value))
    r, _, b = rgb[int(result.model.permutable[most_positive]) + 1]
    assert r > b


def test_best_motif_xyz(result: AnalysisResult, written: dict[str, Path]) -> None:
    atoms = ase.io.read(written["best_motif.xyz"])
    kept = result.model.kept_atoms(result.masks[result.best])[0]
    assert len(atoms) == int(kept.sum())
    np.testing.assert_allclose(atoms.get_positions(), result.model.positions[kept], atol=1e-5)


@pytest.mark.parametrize(
    "name", ["shap_summary.png", "rwp_vs_size.png", "contributions.png", "fit_best.png"]
)
def test_plots(written: dict[str, Path], name: str) -> None:
    path = written[name]
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 5_000


def test_no_plots_and_nan_contribution(result: AnalysisResult, tmp_path: Path) -> None:
    value = result.contributions.value.copy()
    value[3] = np.nan
    res = AnalysisResult(
        **{
            **result.__dict__,
            "contributions": AtomContributions(**{**result.contributions.__dict__, "value": value}),
        }
    )
    files = write_outputs(tmp_path, res, plots=False)
    assert not any(name.endswith(".png") for name in files)
    report = json.loads(files["report.json"].read_text())  # strict JSON despite the NaN
    assert 4 not in {t["atom"] for t in report["top_atoms"]}
    with files["contributions.csv"].open() as fh:
        rows = list(csv.DictReader(fh))
    assert rows[3]["rank"] == "24" and rows[3]["contribution"] == "nan"


def test_helpers() -> None:
    np.testing.assert_array_equal(
        contribution_ranks(np.array([0.1, -0.2, np.nan, 0.0])), [3, 1, 4, 2]
    )
    assert to_jsonable({"a": np.arange(2), "b": (np.float32(1.5), float("inf"))}) == {
        "a": [0, 1],
        "b": [1.5, None],
    }


def test_interval_outputs(result: AnalysisResult, tmp_path: Path) -> None:
    """ci_low/ci_high/label reach the CSV, report.json, the extended XYZ and VESTA, where
    uncertain atoms are drawn smaller than confident ones of the same element."""
    from motex_stream.explain.confidence import ContributionIntervals, interval

    value = result.contributions.value.copy()
    value[0] = 0.0  # straddles zero: uncertain
    sd = np.full(len(value), 0.002)
    low, high, label = interval(value, sd, 0.9)
    assert label[0] == "uncertain"
    res = AnalysisResult(
        **{
            **result.__dict__,
            "contributions": AtomContributions(**{**result.contributions.__dict__, "value": value}),
            "intervals": ContributionIntervals(low, high, label, 0.9, 4, sd, sd * 0),
        }
    )
    files = write_outputs(tmp_path, res, plots=False)
    with files["contributions.csv"].open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["label"] for r in rows] == label
    np.testing.assert_allclose([float(r["ci_low"]) for r in rows], low, rtol=1e-7)
    np.testing.assert_allclose([float(r["ci_high"]) for r in rows], high, rtol=1e-7)
    report = json.loads(files["report.json"].read_text())
    assert [a["label"] for a in report["atoms"]] == label
    assert report["confidence"]["level"] == 0.9
    assert sum(report["confidence"]["counts"].values()) == len(label)
    atoms = ase.io.read(files["model_contributions.xyz"])
    perm = res.model.permutable
    assert list(atoms.arrays["label"][perm]) == label
    assert atoms.arrays["uncertain"][perm[0]] == 1 and atoms.arrays["uncertain"][perm[1]] == 0
    np.testing.assert_allclose(atoms.arrays["ci_low"][perm], low, atol=1e-7)
    lines = files["model_contributions.vesta"].read_text().splitlines()
    sitet = lines[lines.index("SITET") + 1 :]
    radii = {ln.split()[1]: float(ln.split()[2]) for ln in sitet[: res.model.n_atoms]}
    first, second = (f"W{int(i) + 1}" for i in perm[:2])
    assert radii[first] < radii[second]


def test_confirmation_outputs(result: AnalysisResult, tmp_path: Path) -> None:
    """A keep the confirming pass did not confirm is written as uncertain, with the pass's
    measurement per atom and its summary in report.json."""
    from motex_stream.explain.confidence import ContributionIntervals, interval
    from motex_stream.explain.confirmation import apply_confirmation, keep_confirmation

    value = result.contributions.value
    sd = np.full(len(value), 0.002)
    low, high, label = interval(value, sd, 0.9)
    first_keep = np.flatnonzero(np.array(label) == "keep")
    harmful = int(first_keep[-1])

    def fit(masks: np.ndarray) -> np.ndarray:  # every keep helps except ``harmful``
        m = masks.astype(float)
        return 0.9 - 0.02 * m[:, first_keep[:-1]].sum(1) + 0.01 * m[:, harmful]

    ci = ContributionIntervals(low, high, label, 0.9, 4, sd, sd * 0)
    conf = keep_confirmation(label, fit, 8, 0.9, seed=0)
    res = AnalysisResult(**{**result.__dict__, "intervals": apply_confirmation(ci, conf)})
    files = write_outputs(tmp_path, res, plots=False)
    with files["contributions.csv"].open() as fh:
        rows = list(csv.DictReader(fh))
    assert rows[harmful]["label"] == "uncertain" and float(rows[harmful]["ci_high"]) < 0
    report = json.loads(files["report.json"].read_text())
    summary = report["confidence"]["confirmation"]
    number = int(res.atom_numbers()[harmful])
    assert summary["demoted"] == [number]
    assert summary["centre_atoms"] == res.atom_numbers()[first_keep[:-1]].tolist()
    assert summary["contexts"] == 8 and summary["fits"] == conf.n_fits
    assert report["confidence"]["counts"]["keep"] == len(first_keep) - 1
    atom = report["atoms"][harmful]
    assert atom["label"] == "uncertain"
    assert atom["confirmation"]["rwp_change"] == pytest.approx(0.01)
    assert atom["confirmation"]["confirmed"] is False
    assert report["atoms"][int(first_keep[0])]["confirmation"]["confirmed"] is True
    assert "confirmation" not in report["atoms"][int(np.flatnonzero(np.array(label) != "keep")[0])]


def test_refinement_outputs(result: AnalysisResult, tmp_path: Path) -> None:
    """The motif refined by direct fits: report.json's summary and per-atom evidence,
    the two contributions.csv columns and refined_motif.xyz (issue 21)."""
    from dataclasses import replace

    from motex_stream.explain.refine import DescentRun, RefinedMotif

    n = result.model.n_permutable
    mask = np.arange(n) % 2 == 0
    effect = np.where(mask, -0.01, 0.02)
    run = DescentRun("surrogate top 12", mask, mask, 0.31, 0.3, 0, 1, True)
    ref = RefinedMotif(
        mask,
        0.3,
        effect,
        [run],
        n_fits=25,
        budget=100,
        direct_label=["keep" if m else "remove" for m in mask],
        interval_label=["uncertain"] * n,
    )
    out = write_outputs(tmp_path, replace(result, refinement=ref), plots=False)
    report = json.loads(out["report.json"].read_text())
    summary = report["refinement"]
    assert summary["atoms_kept"] == list(range(1, n + 1, 2)) and summary["rwp"] == 0.3
    assert summary["n_fits"] == 25 and summary["converged"] is True
    assert summary["direct_label_counts"] == {"keep": 12, "remove": 12, "uncertain": 0}
    assert summary["withdrawn"] == []  # the fixture's intervals: none was confident before
    atom = report["atoms"][1]["refinement"]
    assert atom == {
        "in_motif": False,
        "rwp_change": 0.02,
        "direct_label": "remove",
        "interval_label": "uncertain",
    }
    with out["contributions.csv"].open() as fh:
        rows = list(csv.reader(fh))
    assert [r[9] for r in rows[1:]] == ["1" if m else "0" for m in mask]
    np.testing.assert_allclose([float(r[10]) for r in rows[1:]], effect)
    xyz = out["refined_motif.xyz"].read_text().splitlines()
    symbols, _ = result.model.motif_positions(mask)  # the catalogue's bonding rule
    assert int(xyz[0]) == len(symbols) and "rwp=0.300000" in xyz[1]
    assert "refined_motif.xyz" in report["files"]
    # a confident interval label the toggles contradicted is reported as withdrawn
    from motex_stream.explain.confidence import ContributionIntervals

    z = np.zeros(n)
    after = ["uncertain"] + ["keep"] * (n - 1)
    ci = ContributionIntervals(z - 1, z - 0.5, after, 0.9, 0, z, z)
    before = replace(ref, interval_label=["keep"] * n)
    out2 = write_outputs(
        tmp_path / "w", replace(result, refinement=before, intervals=ci), plots=False
    )
    assert json.loads(out2["report.json"].read_text())["refinement"]["withdrawn"] == [1]
    # without a refinement: no file, empty columns, null summary
    plain = json.loads(
        (tmp_path / "p").mkdir()
        or write_outputs(tmp_path / "p", result, plots=False)["report.json"].read_text()
    )
    assert plain["refinement"] is None and "refined_motif.xyz" not in plain["files"]
