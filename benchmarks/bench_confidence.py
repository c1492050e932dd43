"""Calibration of the per-atom confidence intervals over repeated seeds on 109725.xyz.

Each seed is a whole `analyze` (new catalogue, new hyperparameter search, new surrogate, new
interval ensemble, and the second pass when ``--adaptive-motifs`` > 0) of the DanMAX
α-Keggin data. The target of an interval is the mean contribution value over all seeds: a
90 % interval should contain it for about 90 % of the atoms. Coverage is measured on the
first-pass intervals (the second pass re-estimates the uncertain atoms in other motifs, so
its intervals bound another quantity). Printed: coverage over all seeds × atoms (and with
the seed's own run left out of the mean), the worst atom, the between-seed spread against
the interval's half-width, label counts before and after the second pass, whether the keep
set stays within W1, W3, …, W23, and the cost of the intervals and of the second pass.

Each seed's numbers are saved in ``--store`` (one ``.npz`` per seed, reused when present), so
disjoint seed ranges can run in separate processes and ``--summary-only`` combines them.

Usage: python benchmarks/bench_confidence.py [--seeds 20] [--first-seed 0] [--catalogue 10000]
       [--ci-models 4] [--level 0.9] [--adaptive-motifs N] [--store DIR] [--summary-only]
       [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from motex_stream.analysis.pipeline import run_analysis
from motex_stream.analysis.settings import ModelSettings

DATA = Path(__file__).resolve().parents[1] / "motex_stream" / "data" / "keggin"
ODD_W = set(range(1, 25, 2))


def run_seed(seed: int, args: argparse.Namespace) -> dict[str, np.ndarray]:
    """One whole analysis; the arrays the summary needs."""
    settings = ModelSettings(
        starting_model=DATA / "109725.xyz",
        catalogue_size=args.catalogue,
        seed=seed,
        ci_models=args.ci_models,
        ci_level=args.level,
        **({} if args.adaptive_motifs is None else {"adaptive_motifs": args.adaptive_motifs}),
    )
    res = run_analysis(DATA / "DanMAX_AlphaKeggin.gr", settings)
    ci = res.intervals
    assert ci is not None
    first = ci.first_pass or ci
    return {
        "value": res.contributions.value,
        "low": first.low,
        "high": first.high,
        "label": np.array(first.label),
        "final_label": np.array(ci.label),
        "adaptive_motifs": np.array(ci.adaptive_motifs),
        "intervals_s": np.array(res.timings["intervals"]),
        "adaptive_s": np.array(res.timings.get("adaptive", 0.0)),
        "total_s": np.array(res.timings["total"]),
    }


def atoms(labels: np.ndarray, which: str) -> set[int]:
    return {i + 1 for i, lab in enumerate(labels) if lab == which}


def summary(runs: list[dict[str, np.ndarray]], args: argparse.Namespace) -> dict:
    v = np.array([r["value"] for r in runs])
    lo = np.array([r["low"] for r in runs])
    hi = np.array([r["high"] for r in runs])
    n = len(v)
    mean = v.mean(axis=0)
    covered = (lo <= mean) & (mean <= hi)
    loo = (v.sum(axis=0)[None, :] - v) / max(n - 1, 1)  # mean of the other seeds
    per_atom = covered.mean(axis=0)
    first = [r["label"] for r in runs]
    final = [r["final_label"] for r in runs]
    return {
        "seeds": [int(s) for s in args.seed_list],
        "catalogue": args.catalogue,
        "ci_models": args.ci_models,
        "level": args.level,
        "coverage_of_seed_mean": float(covered.mean()),
        "coverage_of_other_seeds_mean": float(((lo <= loo) & (loo <= hi)).mean()),
        "coverage_per_atom_min": float(per_atom.min()),
        "worst_atoms": [f"W{i + 1}" for i in np.flatnonzero(per_atom == per_atom.min())],
        "median_half_width": float(np.median((hi - lo) / 2)),
        "median_between_seed_sd": float(np.median(v.std(axis=0, ddof=1))) if n > 1 else None,
        "uncertain_per_seed_first_pass": [int((lab == "uncertain").sum()) for lab in first],
        "uncertain_per_seed_final": [int((lab == "uncertain").sum()) for lab in final],
        "keep_within_odd_W": all(atoms(lab, "keep") <= ODD_W for lab in final),
        "keep_is_all_odd_W": sum(atoms(lab, "keep") == ODD_W for lab in final),
        "remove_outside_odd_W": all(not atoms(lab, "remove") & ODD_W for lab in final),
        "adaptive_motifs_per_seed": [int(r["adaptive_motifs"]) for r in runs],
        "intervals_s_median": float(np.median([r["intervals_s"] for r in runs])),
        "adaptive_s_median_when_run": float(
            np.median([r["adaptive_s"] for r in runs if r["adaptive_motifs"] > 0] or [0.0])
        ),
        "analysis_s_median": float(np.median([r["total_s"] for r in runs])),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--catalogue", type=int, default=10_000)
    ap.add_argument("--ci-models", type=int, default=4)
    ap.add_argument("--level", type=float, default=0.9)
    ap.add_argument(
        "--adaptive-motifs", type=int, default=None, help="second pass (default: the setting's)"
    )
    ap.add_argument("--store", type=Path, default=None, help="per-seed .npz folder (reused)")
    ap.add_argument("--summary-only", action="store_true", help="only combine --store")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    args.seed_list = list(range(args.first_seed, args.first_seed + args.seeds))
    if args.store:
        args.store.mkdir(parents=True, exist_ok=True)

    runs = []
    t0 = time.perf_counter()
    for seed in args.seed_list:
        path = args.store / f"seed{seed}.npz" if args.store else None
        if path is not None and path.exists():
            runs.append(dict(np.load(path)))
            continue
        if args.summary_only:
            raise SystemExit(f"seed {seed} missing from {args.store}")
        run = run_seed(seed, args)
        if path is not None:
            np.savez(path, **run)
        runs.append(run)
        print(
            f"seed {seed:2d}: uncertain {int((run['label'] == 'uncertain').sum())} -> "
            f"{int((run['final_label'] == 'uncertain').sum())}  intervals "
            f"{float(run['intervals_s']):.2f} s, second pass {float(run['adaptive_s']):.2f} s "
            f"of {float(run['total_s']):.2f} s",
            flush=True,
        )
    out = {**summary(runs, args), "wall_s": time.perf_counter() - t0}
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
