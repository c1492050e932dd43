"""Coverage of the 90 % intervals against the seed-to-seed spread (issue 21, item 3).

Each seed is a whole ``analyze`` (new catalogue, search, surrogate, interval ensemble) of the
same data; the target of an interval is the value's expectation over analyses, estimated by
the mean over the seeds. A seed's deviation from that mean is rescaled by sqrt(S / (S − 1))
(the mean holds the seed itself: without it 5 seeds would read ~3 points high). Printed per
target, from the same runs' components: coverage of the intervals as the analysis builds them
(:func:`motex_stream.explain.confidence.combined_sd`) and of a calibration that was tried and
rejected (the members' SD scaled from the m-out-of-n resample to the catalogue,
``1 / sqrt(f + (1 − f)·n/m)`` with f = 1/3: fitted to 90 % on 109725 seeds 0–4, it covered
58 % on seeds 5–9); the median half-width against the between-seed SD; label counts; and the
label errors against the truth (the intervals' labels, before the confirming pass and the
refinement check; on 109725 the truth is W1, W3, …, W23).

Targets: ``keggin`` (109725 with the DanMAX data, default settings: 10,000 motifs, m = 2,500)
or the index of a ``bench_known_truth.family()`` case (its data simulated once, seed 0, with
the real-space calculator).

    .venv/bin/python benchmarks/bench_known_truth_coverage.py --target keggin --seeds 0 1 2 3 4
    .venv/bin/python benchmarks/bench_known_truth_coverage.py --target 3 --quick --search 12 5 \
        --catalogue 1000 --ci-rows 250 --seeds 0 1 2 3 4 5

Bounded by counts (seeds, catalogue); the refinement is off (it does not touch the intervals).
Per-seed components are kept in ``--store`` and reused.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from motex_stream.analysis.pipeline import run_analysis
from motex_stream.analysis.settings import ModelSettings
from motex_stream.explain.confidence import combined_sd, interval

ROOT = Path(__file__).resolve().parents[1]
KEGGIN = ROOT / "motex_stream" / "data" / "keggin"
sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_known_truth as family_bench  # noqa: E402


def run_seed(
    target: str,
    seed: int,
    catalogue: int | None,
    ci_rows: int | None = None,
    quick: bool = False,
    search: tuple[int, int] | None = None,
) -> dict[str, np.ndarray]:
    """One analysis; the interval's components (first pass) and, on the family, the truth."""
    with tempfile.TemporaryDirectory() as tmp:
        if target == "keggin":
            settings = ModelSettings(
                starting_model=KEGGIN / "109725.xyz",
                seed=seed,
                refine_fits=0,
                **({"catalogue_size": catalogue} if catalogue else {}),
                **({"ci_rows": ci_rows} if ci_rows else {}),
            )
            res = run_analysis(KEGGIN / "DanMAX_AlphaKeggin.gr", settings)
            truth = np.array([i % 2 == 0 for i in range(24)])  # W1, W3, …, W23: one unit
        else:
            case = family_bench.family()[int(target)]
            case = replace(case, perturbation=replace(case.perturbation, calculator="realspace"))
            budget = family_bench.QUICK if quick else family_bench.Budget()
            budget = replace(budget, refine_fits=0)
            if search:
                budget = replace(budget, search_calls=search[0], cv_folds=search[1])
            if catalogue:
                budget = replace(budget, catalogue=catalogue)
            extra = {"ci_rows": ci_rows} if ci_rows else {}
            res, _, settings = family_bench.analyse_case(case, seed, budget, Path(tmp), 0, **extra)
            truth = np.array(case.all_truths())  # (images, N): the PDF cannot tell them apart
    ci = res.intervals
    assert ci is not None
    first = ci.first_pass or ci
    return {
        "value": res.contributions.value,
        "ensemble_sd": first.ensemble_sd,
        "sampling_se": first.sampling_se,
        "n_models": np.array(first.n_models),
        "rows": np.array(settings.ci_rows),
        "n_fits": np.array(len(res.fits.rwp)),
        "level": np.array(first.level),
        "truth": truth,
    }


#: The rejected calibration's share of size-independent variance (see the module doc).
REJECTED_SHARE = 1.0 / 3.0


def resample_scale(rows: int, n_fits: int, share: float = REJECTED_SHARE) -> float:
    """``1 / sqrt(f + (1 − f)·n/m)``: the SD of members on m of n motifs scaled to n, if a
    share f of the between-analysis variance did not shrink with the catalogue (rejected)."""
    m = max(1, min(rows, n_fits))
    return float(1.0 / np.sqrt(share + (1.0 - share) * n_fits / m))


def coverage(runs: list[dict[str, np.ndarray]], scaled: bool) -> dict[str, object]:
    """Coverage of the seed mean, half-width / between-seed SD and labels of one variant."""
    v = np.array([r["value"] for r in runs])
    s = len(v)
    mean = v.mean(axis=0)
    dev = np.abs(v - mean) * np.sqrt(s / (s - 1))
    half, labels = [], []
    for r in runs:
        scale = resample_scale(int(r["rows"]), int(r["n_fits"])) if scaled else 1.0
        sd, df = combined_sd(scale * r["ensemble_sd"], int(r["n_models"]), r["sampling_se"])
        low, high, lab = interval(r["value"], sd, float(r["level"]), df)
        half.append((high - low) / 2)
        labels.append(np.array(lab))
    half_a = np.array(half)
    images = np.atleast_2d(runs[0]["truth"]).astype(bool)
    lab_a = np.array(labels)
    keep, remove = lab_a == "keep", lab_a == "remove"
    # per seed, the image of the truth its labels agree with best (keep in, remove out)
    score = (keep[:, None] & images[None]).sum(-1) - (keep[:, None] & ~images[None]).sum(-1)
    score -= (remove[:, None] & images[None]).sum(-1)
    truth = images[score.argmax(axis=1)]  # (seeds, N)
    return {
        "coverage": float((dev <= half_a).mean()),
        "covered": int((dev <= half_a).sum()),
        "pairs": int(dev.size),
        "half_over_seed_sd": float(np.median(half_a) / np.median(v.std(axis=0, ddof=1))),
        "keep/remove/uncertain per seed": [
            f"{int(k.sum())}/{int(r.sum())}/{int(len(k) - k.sum() - r.sum())}"
            for k, r in zip(keep, remove, strict=True)
        ],
        "false_keep": f"{int((keep & ~truth).sum())}/{int(keep.sum())}",
        "truth_removed": f"{int((remove & truth).sum())}/{int(truth.sum())}",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", default="keggin", help="keggin or a family case index")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--catalogue", type=int, help="motifs per analysis (default: the target's)")
    ap.add_argument("--ci-rows", type=int, help="motifs per member resample (default 2,500)")
    ap.add_argument("--quick", action="store_true", help="family: the --quick budget")
    ap.add_argument(
        "--search", type=int, nargs=2, metavar=("CALLS", "FOLDS"), help="family: search size"
    )
    ap.add_argument("--store", type=Path, help="per-seed .npz folder (reused when present)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    runs = []
    for seed in args.seeds:
        quick = "-quick" if args.quick else ""
        search = f"-s{args.search[0]}x{args.search[1]}" if args.search else ""
        name = f"{args.target}{quick}{search}-{args.catalogue}-{args.ci_rows}-seed{seed}.npz"
        path = args.store / name if args.store else None
        if path is not None and path.exists():
            runs.append(dict(np.load(path)))
            continue
        runs.append(
            run_seed(
                args.target,
                seed,
                args.catalogue,
                args.ci_rows,
                args.quick,
                tuple(args.search) if args.search else None,
            )
        )
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savez(path, **runs[-1])
        print(f"seed {seed} done", flush=True)
    out = {
        "target": args.target,
        "seeds": args.seeds,
        "n_fits": int(runs[0]["n_fits"]),
        "rows": int(runs[0]["rows"]),
        "intervals": coverage(runs, scaled=False),
        "scaled_to_catalogue_rejected": coverage(runs, scaled=True),
    }
    print(json.dumps(out, indent=1))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
