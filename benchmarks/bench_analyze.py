"""Deterministic `analyze` of 109725.xyz on the DanMAX data, stage by stage.

Baseline, same run: the former default, a hyperparameter search capped at 4 s of wall clock
(``search_time_s=4``). The deterministic run evaluates every one of ``search_calls`` points,
so its answer does not depend on machine load; the table shows what that costs. A second
deterministic run checks that the contributions are bit-identical.

Usage: python benchmarks/bench_analyze.py [--catalogue 10000] [--zoom isotropic]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from motex_stream.analysis.outputs import write_outputs
from motex_stream.analysis.pipeline import run_analysis
from motex_stream.analysis.result import AnalysisResult
from motex_stream.analysis.settings import ModelSettings

DATA = Path(__file__).resolve().parents[1] / "motex_stream" / "data" / "keggin"
STAGES = (
    "load",
    "catalogue",
    "prepare_engine",
    "fit",
    "train_search",
    "train_fit",
    "train",
    "explain",
    "outputs",
)


def timed_analysis(settings: ModelSettings) -> tuple[AnalysisResult, float]:
    """One whole analyze (outputs included, plots skipped) and its wall time."""
    t = time.perf_counter()
    result = run_analysis(DATA / "DanMAX_AlphaKeggin.gr", settings)
    with tempfile.TemporaryDirectory() as out:
        t_out = time.perf_counter()
        write_outputs(Path(out), result, plots=False)
        result.timings["outputs"] = time.perf_counter() - t_out
    return result, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--catalogue", type=int, default=10_000)
    ap.add_argument("--zoom", default="isotropic")
    args = ap.parse_args()
    base = ModelSettings(
        starting_model=DATA / "109725.xyz", catalogue_size=args.catalogue, zoom=args.zoom
    )
    # warm-up: numba compilation is cached on disk after the first use of a checkout
    run_analysis(DATA / "DanMAX_AlphaKeggin.gr", base.updated(catalogue_size=500))

    capped, t_capped = timed_analysis(base.updated(search_time_s=4.0))
    det, t_det = timed_analysis(base)
    again, _ = timed_analysis(base)

    print(f"analyze of a {args.catalogue}-motif catalogue ({args.zoom}), 109725.xyz, DanMAX data")
    print(f"{'stage (s)':16s} {'4 s-capped (old)':>17s} {'deterministic':>14s} {'ratio':>7s}")
    for k in STAGES:
        a, b = capped.timings.get(k, 0.0), det.timings.get(k, 0.0)
        ratio = f"{b / a:6.2f}x" if a > 0 else "      -"
        print(f"{k:16s} {a:17.2f} {b:14.2f} {ratio:>7s}")
    print(f"{'TOTAL wall':16s} {t_capped:17.2f} {t_det:14.2f} {t_det / t_capped:6.2f}x")
    for label, res in (("capped", capped), ("deterministic", det)):
        top12 = sorted(res.atom_numbers()[res.contributions.ranking()[:12]].tolist())
        print(
            f"{label:14s}: {len(res.settings['search_trace'])} search points, "
            f"{res.settings['n_trees']} trees of depth "
            f"{res.settings['hyperparameters']['max_depth']}, test MAE {res.test_mae:.4f}, "
            f"top-12 W {top12}"
        )
    same = np.array_equal(det.contributions.value, again.contributions.value)
    print(f"deterministic run repeated: contributions bit-identical = {same}")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
