"""Calibration of the per-atom confidence intervals over repeated seeds on 109725.xyz.

Each seed is a whole `analyze` (new catalogue, new hyperparameter search, new surrogate and
new interval ensemble) of the DanMAX α-Keggin data. The target of an interval is the mean
contribution value over all seeds: a 90 % interval should contain it for about 90 % of the
atoms. Printed: coverage over all seeds × atoms (and with the seed's own run left out of the
mean), the observed between-seed spread against the interval's own error estimate, the label
counts, whether the keep set stays within W1, W3, …, W23, and the interval cost.

Usage: python benchmarks/bench_confidence.py [--seeds 20] [--catalogue 10000] [--ci-models 4]
       [--level 0.9] [--json out.json]
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--catalogue", type=int, default=10_000)
    ap.add_argument("--ci-models", type=int, default=4)
    ap.add_argument("--level", type=float, default=0.9)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    values, lows, highs, labels, cost, total = [], [], [], [], [], []
    t0 = time.perf_counter()
    for seed in range(args.seeds):
        settings = ModelSettings(
            starting_model=DATA / "109725.xyz",
            catalogue_size=args.catalogue,
            seed=seed,
            ci_models=args.ci_models,
            ci_level=args.level,
        )
        res = run_analysis(DATA / "DanMAX_AlphaKeggin.gr", settings)
        assert res.intervals is not None
        values.append(res.contributions.value)
        lows.append(res.intervals.low)
        highs.append(res.intervals.high)
        labels.append(res.intervals.label)
        cost.append(res.timings["intervals"])
        total.append(res.timings["total"])
        print(
            f"seed {seed:2d}: {res.intervals.counts()}  intervals {cost[-1]:.2f} s "
            f"of {total[-1]:.2f} s",
            flush=True,
        )
    v, lo, hi = np.array(values), np.array(lows), np.array(highs)
    n = len(v)
    mean = v.mean(axis=0)
    covered = (lo <= mean) & (mean <= hi)
    loo = (v.sum(axis=0)[None, :] - v) / max(n - 1, 1)  # mean of the other seeds
    covered_loo = (lo <= loo) & (loo <= hi)
    z_half = (hi - lo) / 2
    odd = set(range(1, 25, 2))
    keep_sets = [{i + 1 for i, lab in enumerate(row) if lab == "keep"} for row in labels]
    remove_sets = [{i + 1 for i, lab in enumerate(row) if lab == "remove"} for row in labels]
    out = {
        "seeds": n,
        "catalogue": args.catalogue,
        "ci_models": args.ci_models,
        "level": args.level,
        "coverage_of_seed_mean": float(covered.mean()),
        "coverage_of_other_seeds_mean": float(covered_loo.mean()),
        "coverage_per_atom_min": float(covered.mean(axis=0).min()),
        "median_half_width": float(np.median(z_half)),
        "median_between_seed_sd": float(np.median(v.std(axis=0, ddof=1))) if n > 1 else None,
        "uncertain_per_seed": [row.count("uncertain") for row in labels],
        "keep_within_odd_W": all(k <= odd for k in keep_sets),
        "keep_is_all_odd_W": sum(k == odd for k in keep_sets),
        "remove_outside_odd_W": all(not (r & odd) for r in remove_sets),
        "intervals_s_median": float(np.median(cost)),
        "analysis_s_median": float(np.median(total)),
        "wall_s": time.perf_counter() - t0,
    }
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
