"""Dask speed-up against worker count, with the local in-process fit as the baseline.

Fits one seeded catalogue (109725, W permuted, isotropic by default) locally
(``steps.fit_masks`` without Dask) and then on ``distributed.LocalCluster`` s of 1, 2, …
``--workers`` worker processes (one thread each, BLAS limited to one thread per worker) on
127.0.0.1, all in the same run. Prints fits/s, the speed-up over one Dask worker, the scaling
efficiency (speed-up / workers), and checks that every run gave the local Rwp exactly. The
first job on a fresh cluster includes scattering the engine and the workers' first-use
tables; it is timed separately from the steady-state job.

Usage: python benchmarks/bench_dask.py [--catalogue 100000] [--workers 2] [--zoom isotropic]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from motex_stream.analysis import steps
from motex_stream.catalogue import random_catalogue
from motex_stream.fitting.grfile import read_gr
from motex_stream.pdf.batched import prepare_model
from motex_stream.structure import load_starting_model

DATA = Path(__file__).resolve().parents[1] / "motex_stream" / "data" / "keggin"


def main() -> None:
    import distributed

    ap = argparse.ArgumentParser()
    ap.add_argument("--catalogue", type=int, default=100_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--zoom", default="isotropic", choices=["isotropic", "anisotropic"])
    args = ap.parse_args()

    data = read_gr(DATA / "DanMAX_AlphaKeggin.gr").crop(1.6, 10.0)
    model = load_starting_model(DATA / "109725.xyz", ["W"], 2.5)
    engine = prepare_model(model, steps.default_pdf_settings(data.r), data.r)
    masks = random_catalogue(model.n_permutable, args.catalogue, 0, 3, 21)
    steps.fit_masks(engine, masks[:256], data.g, args.zoom)  # tables, JIT

    with threadpool_limits(1):
        t = time.perf_counter()
        local = steps.fit_masks(engine, masks, data.g, args.zoom)
        local_s = time.perf_counter() - t
    print(f"catalogue {len(masks):,} motifs, {args.zoom}; {len(engine.class_sets):,} pair classes")
    print(
        "| run | workers | first job (s) | job (s) | fits/s | speed-up vs 1 worker | efficiency |"
    )
    print("|---|---|---|---|---|---|---|")
    print(
        f"| local, 1 thread (baseline) | – | – | {local_s:.2f} | {len(masks) / local_s:,.0f} | | |"
    )
    one = None
    for n in range(1, args.workers + 1):
        with (
            distributed.LocalCluster(
                n_workers=n,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address=None,
                env={"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"},
            ) as cluster,
            distributed.Client(cluster, set_as_default=False) as client,
        ):
            t = time.perf_counter()
            first = steps.fit_masks(engine, masks, data.g, args.zoom, dask=client)
            first_s = time.perf_counter() - t
            t = time.perf_counter()
            res = steps.fit_masks(engine, masks, data.g, args.zoom, dask=client)
            job_s = time.perf_counter() - t
        assert np.array_equal(first.rwp, local.rwp) and np.array_equal(res.rwp, local.rwp)
        one = one or job_s
        speed = one / job_s
        print(
            f"| Dask LocalCluster | {n} | {first_s:.2f} | {job_s:.2f} | {len(masks) / job_s:,.0f} "
            f"| {speed:.2f}× | {speed / n:.0%} |",
            flush=True,
        )
    print("every Dask run gave the local Rwp bit for bit")


if __name__ == "__main__":
    main()
