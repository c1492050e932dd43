"""Fits per second of the batched engines vs the per-motif reference method, same run.

Baselines, all timed in the same process on the same catalogue: the reference method itself
(exact per-cluster PDF + scipy least squares, `motex_stream.fitting.reference_fit`, what
ML-MotEx does with DiffPy-CMI) on a small sample, and the former numpy isotropic engine
(`fit_isotropic_numpy`, kept in tests/reference_isotropic.py) beside the compiled one. The
numpy and compiled isotropic engines are timed alternately (0.5 s apart: OpenBLAS's idle
threads spin after a threaded call), best of ``--repeats`` each, so a neighbour's load hits
both alike; CPU seconds (all threads) are printed too, since they are what a shared machine
cannot inflate. Also prints the largest Rwp difference between the two isotropic engines.
Usage: python benchmarks/bench_engine.py [--catalogue 10000] [--baseline 20] [--repeats 5]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from motex_stream.analysis.steps import default_pdf_settings  # noqa: E402
from motex_stream.catalogue import random_catalogue  # noqa: E402
from motex_stream.fitting.anisotropic import fit_anisotropic, prep_tables  # noqa: E402
from motex_stream.fitting.grfile import read_gr  # noqa: E402
from motex_stream.fitting.isotropic import fit_isotropic  # noqa: E402
from motex_stream.fitting.reference_fit import reference_fit  # noqa: E402
from motex_stream.pdf.batched import prepare_model  # noqa: E402
from motex_stream.structure import load_starting_model  # noqa: E402
from tests.reference_isotropic import fit_isotropic_numpy  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "motex_stream" / "data" / "keggin"


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def timed(fn) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """(wall, CPU) seconds of one call."""
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--catalogue", type=int, default=10_000)
    ap.add_argument("--baseline", type=int, default=20, help="motifs fitted by the baseline")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    data = read_gr(DATA / "DanMAX_AlphaKeggin.gr").crop(1.6, 10.0)
    model = load_starting_model(DATA / "109725.xyz", ["W"], 2.5)
    settings = default_pdf_settings(data.r)
    masks = random_catalogue(model.n_permutable, args.catalogue, seed=0)

    t = time.perf_counter()
    prep = prepare_model(model, settings, data.r)
    t_prep = time.perf_counter() - t
    t = time.perf_counter()
    prep_tables(prep)
    t_tables = time.perf_counter() - t
    fit_isotropic(prep, masks[:64], data.g)  # warm up (numba compile cache, BLAS)
    fit_isotropic_numpy(prep, masks[:64], data.g)
    fit_anisotropic(prep, masks[:8], data.g)

    t_base = best_of(
        lambda: reference_fit(model, masks[: args.baseline], data.g, data.r, settings), 1
    )
    base_rate = args.baseline / t_base
    runs: dict[str, list[tuple[float, float]]] = {"numpy": [], "compiled": []}
    for _ in range(args.repeats):  # alternate, so both see the same neighbours
        # a pause before each: OpenBLAS's idle threads spin-wait ~0.1 s after a threaded
        # call, which would otherwise land on whichever engine runs next
        time.sleep(0.5)
        runs["numpy"].append(timed(lambda: fit_isotropic_numpy(prep, masks, data.g)))
        time.sleep(0.5)
        runs["compiled"].append(timed(lambda: fit_isotropic(prep, masks, data.g)))
    t_np, c_np = min(runs["numpy"])
    t_iso, c_iso = min(runs["compiled"])
    time.sleep(0.5)
    t_aniso, c_aniso = timed(lambda: fit_anisotropic(prep, masks, data.g))
    new_rwp = fit_isotropic(prep, masks, data.g).rwp
    np_rwp = fit_isotropic_numpy(prep, masks, data.g).rwp
    with threadpool_limits(1, user_api="blas"):  # as each fitting thread of the new engine
        np1_rwp = fit_isotropic_numpy(prep, masks, data.g).rwp
    drwp = float(np.max(np.abs(new_rwp - np1_rwp)))
    drwp_np = float(np.max(np.abs(np_rwp - np1_rwp)))

    rows = [
        (
            "reference per-motif (exact PDF + scipy leastsq, 3 zooms)",
            args.baseline,
            t_base,
            float("nan"),
            base_rate,
        ),
        ("batched isotropic, numpy (former engine)", len(masks), t_np, c_np, len(masks) / t_np),
        ("batched isotropic, compiled", len(masks), t_iso, c_iso, len(masks) / t_iso),
        (
            "batched anisotropic (3 zooms, multi-basin)",
            len(masks),
            t_aniso,
            c_aniso,
            len(masks) / t_aniso,
        ),
    ]
    print(
        f"109725.xyz (24 W + 80 O), DanMAX α-Keggin, 841 points; engine preparation "
        f"{t_prep:.2f} s (+ {t_tables:.2f} s distance tables)"
    )
    print(
        f"{'method':58s} {'motifs':>7s} {'wall s':>8s} {'CPU s':>7s} {'fits/s':>10s} "
        f"{'fits/CPU-s':>11s} {'× reference':>12s}"
    )
    for name, n, dt, cpu, rate in rows:
        print(
            f"{name:58s} {n:7d} {dt:8.3f} {cpu:7.3f} {rate:10.0f} {n / cpu:11.0f} "
            f"{rate / base_rate:12.0f}"
        )
    print(
        f"compiled / numpy isotropic: {t_np / t_iso:.2f}× wall, {c_np / c_iso:.2f}× CPU "
        f"(best of {args.repeats}, alternating)"
    )
    print(
        f"max |ΔRwp| compiled vs numpy engine (both one BLAS thread per fitting thread): "
        f"{drwp:.1e}; the numpy engine itself, 1 vs default BLAS threads: {drwp_np:.1e}"
    )
    print(
        f"anisotropic: {len(masks) / c_aniso:.0f} fits per CPU-second; the wall rate is that "
        f"× the cores it actually got (1,000 fits/s needs ~{1000 * c_aniso / len(masks):.1f} "
        "free cores)"
    )


if __name__ == "__main__":
    main()
