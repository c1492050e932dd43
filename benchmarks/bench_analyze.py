"""Wall time of the whole `analyze` (fits + search + training + SHAP + outputs), per stage.

Baseline, same run: the reference cost of the fitting step extrapolated from timing the
per-motif reference method on a sample (the full reference would take ~25 CPU-minutes).
Usage: python benchmarks/bench_analyze.py [--catalogue 10000] [--zoom isotropic]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

from motex_stream.analysis.outputs import write_outputs
from motex_stream.analysis.pipeline import AnalysisSettings, run_analysis
from motex_stream.catalogue import random_catalogue
from motex_stream.fitting.grfile import read_gr
from motex_stream.fitting.reference_fit import reference_fit
from motex_stream.pdf.settings import PDFSettings
from motex_stream.structure import load_starting_model

DATA = Path(__file__).resolve().parents[1] / "motex_stream" / "data" / "keggin"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--catalogue", type=int, default=10_000)
    ap.add_argument("--zoom", default="isotropic")
    ap.add_argument("--baseline", type=int, default=10)
    args = ap.parse_args()
    gr, xyz = DATA / "DanMAX_AlphaKeggin.gr", DATA / "109725.xyz"
    # warm-up run: numba compilation is cached on disk after the first use of a checkout
    run_analysis(gr, xyz, AnalysisSettings(catalogue=500, qmax=20.0, zoom=args.zoom))

    t = time.perf_counter()
    result = run_analysis(
        gr, xyz, AnalysisSettings(catalogue=args.catalogue, qmax=20.0, zoom=args.zoom)
    )
    with tempfile.TemporaryDirectory() as out:
        t_out = time.perf_counter()
        write_outputs(Path(out), result)
        result.timings["outputs"] = time.perf_counter() - t_out
    wall = time.perf_counter() - t

    data = read_gr(gr).crop(1.6, 10.0)
    model = load_starting_model(xyz, ["W"], 2.5)
    masks = random_catalogue(24, args.baseline, seed=1)
    tb = time.perf_counter()
    reference_fit(model, masks, data.g, data.r, PDFSettings.for_data_grid(data.r, qmax=20.0))
    per_fit = (time.perf_counter() - tb) / args.baseline
    ref_fit_total = per_fit * args.catalogue

    print(f"analyze of a {args.catalogue}-motif catalogue ({args.zoom}), 109725.xyz, DanMAX data")
    print(f"{'stage':24s} {'seconds':>9s}")
    for k in (
        "load",
        "catalogue",
        "prepare_engine",
        "fit",
        "train",
        "train_search",
        "train_fit",
        "explain",
        "outputs",
    ):
        print(f"{k:24s} {result.timings.get(k, 0.0):9.2f}")
    print(f"{'TOTAL wall':24s} {wall:9.2f}")
    print(
        f"baseline: reference fits alone, extrapolated from {args.baseline} timed: "
        f"{ref_fit_total:.0f} s  → ratio {ref_fit_total / wall:.0f}× for the whole analyze"
    )
    top12 = result.contributions.ranking()[:12]
    print(
        f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB; "
        f"test MAE {result.test_mae:.4f}; "
        f"top-12 atoms {sorted(result.atom_numbers()[top12].tolist())}"
    )


if __name__ == "__main__":
    main()
