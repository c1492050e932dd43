"""Anisotropic fits per second: pairs grouped into vector classes vs every pair on its own.

The baseline is the former method (``fit_anisotropic(..., group_pairs=False)``: the
Levenberg–Marquardt loop sums every kept pair), timed in the same process, on the same
catalogue, alternating with the grouped engine (best of ``--repeats`` each), so a neighbour's
load hits both alike. CPU seconds (all threads) are printed too. Models: 109725 (the
baseline of issue 13) and the β-Ga2O3 supercells and repeated Keggin cells of
``bench_scaling.py``. Also prints the largest Rwp difference between the two methods.
Usage: python benchmarks/bench_anisotropic.py [--motifs 200] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from bench_scaling import build_starting_model, models

from motex_stream.analysis.steps import default_pdf_settings
from motex_stream.catalogue import random_catalogue
from motex_stream.fitting.anisotropic import fit_anisotropic, prep_tables, vector_classes
from motex_stream.fitting.grfile import read_gr
from motex_stream.pdf.batched import prepare_model


def timed(prep, masks, g, group_pairs: bool):  # type: ignore[no-untyped-def]
    """(wall s, CPU s of all threads, fits) of one anisotropic fit of ``masks``."""
    w, c = time.perf_counter(), time.process_time()
    out = fit_anisotropic(prep, masks, g, group_pairs=group_pairs)
    return time.perf_counter() - w, time.process_time() - c, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--motifs", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--models", default="109725 (baseline),Ga2O3 2x2x2,Keggin 109725 x10")
    args = ap.parse_args()
    wanted = args.models.split(",")
    print(
        f"anisotropic fits, {args.motifs} random motifs per model, best of {args.repeats} "
        f"(load average {os.getloadavg()[0]:.1f} at start)"
    )
    print(
        f"{'model':22s} {'pairs':>7s} {'classes':>8s} {'per pair fits/s':>16s} "
        f"{'grouped fits/s':>15s} {'ratio':>6s} {'per CPU-s (pair→grouped)':>26s} "
        f"{'max |ΔRwp|':>11s}"
    )
    for name, symbols, pos, permute, gr in models():
        if name not in wanted:
            continue
        data = read_gr(gr).crop(1.6, 10.0)
        model = build_starting_model(symbols, pos, permute, 2.5 if permute == ["W"] else 2.2)
        prep = prepare_model(model, default_pdf_settings(data.r), data.r)
        prep_tables(prep)
        classes = len(vector_classes(prep)[2])
        masks = random_catalogue(model.n_permutable, args.motifs, 1)
        fit_anisotropic(prep, masks[:4], data.g)  # compile
        fit_anisotropic(prep, masks[:4], data.g, group_pairs=False)
        pair, grouped = [], []
        for _ in range(args.repeats):
            pair.append(timed(prep, masks, data.g, group_pairs=False))
            grouped.append(timed(prep, masks, data.g, group_pairs=True))
        wall_p, cpu_p = min(p[0] for p in pair), min(p[1] for p in pair)
        wall_g, cpu_g = min(g[0] for g in grouped), min(g[1] for g in grouped)
        diff = float(np.max(np.abs(pair[0][2].rwp - grouped[0][2].rwp)))
        n = len(masks)
        print(
            f"{name:22s} {len(prep.pairs.kind):7d} {classes:8d} {n / wall_p:16.0f} "
            f"{n / wall_g:15.0f} {wall_p / wall_g:6.1f} "
            f"{f'{n / cpu_p:.0f} → {n / cpu_g:.0f}':>26s} {diff:11.1e}",
            flush=True,
        )
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
