"""Fits per second of the torch engine (CUDA, else CPU torch) against the numpy CPU engine,
both timed in this run, for catalogues of 10^4...10^6 motifs, isotropic and anisotropic.

Why this shape: the torch engine exists for big catalogues and for the anisotropic mode on a
GPU, so the question is its rate against what the same host does without it. Every catalogue
is fitted in chunks (memory stays flat at any size); each engine gets the same seeded
catalogue and fits it from the start until it is done or ``--budget`` seconds have passed,
so a slow engine on a big catalogue reports its rate over the motifs it reached (column
"fitted"). Both engines are warmed up first (numba compilation, CUDA context), untimed. The
largest |ΔRwp| between the engines over the motifs both fitted is printed too.

Model: 109725 (24 W + 80 O) on the bundled DanMAX α-Keggin data, 1.6-10 Å, Qmax 20.

Usage:
  python benchmarks/bench_gpu.py --quick       # 10^4, 10^5, 10^6; 5 s per cell (a few min)
  python benchmarks/bench_gpu.py [--sizes 10000 100000 1000000] [--budget 30] [--device cuda]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from motex_stream.analysis.steps import FIT_CHUNK, default_pdf_settings
from motex_stream.catalogue import random_catalogue
from motex_stream.fitting import torch_engine as te
from motex_stream.fitting.anisotropic import fit_anisotropic, prep_tables
from motex_stream.fitting.grfile import read_gr
from motex_stream.fitting.isotropic import fit_isotropic
from motex_stream.fitting.results import FitResults
from motex_stream.pdf.batched import PreparedModel, prepare_model
from motex_stream.structure import load_starting_model

DATA = Path(__file__).resolve().parents[1] / "motex_stream" / "data" / "keggin"
DEFAULT_DTYPES = "engine defaults (isotropic float64, anisotropic float32 sums)"
FIRST_CHUNK = 256  # chunks grow from here to the engine's own size: a slow cell still reports

Fit = Callable[[PreparedModel, np.ndarray, np.ndarray], FitResults]


def device_name(device: str) -> str:
    """A human-readable name of the torch device, for the table's header."""
    import torch

    dev = te.resolve_device(device)
    if dev.startswith("cuda"):
        return f"{dev}: {torch.cuda.get_device_name(torch.device(dev))}"
    return f"cpu ({te.CPU_WORKERS} fitting threads, 1 torch thread each)"


def run_cell(
    fit: Fit, prep: PreparedModel, masks: np.ndarray, g: np.ndarray, chunk: int, budget: float
) -> tuple[int, float, np.ndarray]:
    """Fit ``masks`` from the start in growing chunks until done or past ``budget`` seconds.

    Returns (motifs fitted, wall seconds, their Rwp).
    """
    rwp = []
    done = 0
    size = min(FIRST_CHUNK, chunk)
    t0 = time.perf_counter()
    while done < len(masks):
        res = fit(prep, masks[done : done + size], g)
        rwp.append(res.rwp)
        done += len(res)
        if time.perf_counter() - t0 > budget:
            break
        size = min(2 * size, chunk)
    return done, time.perf_counter() - t0, np.concatenate(rwp)


def engines(device: str, dtype: object) -> dict[str, dict[str, tuple[Fit, int]]]:
    """Per mode: the numpy engine and the torch engine, with the chunk each is called with."""
    kind = "cuda" if device.startswith("cuda") else "cpu"

    def torch_iso(p: PreparedModel, m: np.ndarray, g: np.ndarray) -> FitResults:
        return te.fit_isotropic_torch(p, m, g, device=device, dtype=dtype)

    def torch_aniso(p: PreparedModel, m: np.ndarray, g: np.ndarray) -> FitResults:
        return te.fit_anisotropic_torch(p, m, g, device=device, dtype=dtype)

    return {
        "isotropic": {
            "numpy": (fit_isotropic, FIT_CHUNK),
            "torch": (torch_iso, 4 * te.ISO_CHUNK[kind]),
        },
        "anisotropic": {
            "numpy": (fit_anisotropic, FIT_CHUNK),
            "torch": (torch_aniso, te.ANISO_CHUNK[kind]),
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--budget", type=float, default=30.0, help="seconds per engine and cell")
    ap.add_argument("--modes", nargs="+", default=["isotropic", "anisotropic"])
    ap.add_argument("--device", default="auto", help="torch device: auto, cpu, cuda, cuda:N")
    ap.add_argument("--dtype", choices=["float64", "float32"], default=None)
    ap.add_argument("--quick", action="store_true", help="5 s per cell")
    args = ap.parse_args()
    budget = 5.0 if args.quick else args.budget
    import torch

    device = te.resolve_device(args.device)
    dtype = getattr(torch, args.dtype) if args.dtype else None

    data = read_gr(DATA / "DanMAX_AlphaKeggin.gr").crop(1.6, 10.0)
    model = load_starting_model(DATA / "109725.xyz", ["W"], 2.5)
    prep = prepare_model(model, default_pdf_settings(data.r), data.r)
    prep_tables(prep)
    table = engines(device, dtype)
    warm = random_catalogue(model.n_permutable, 64, seed=1)
    for mode in args.modes:  # compile / upload / CUDA context, untimed
        for fit, _ in table[mode].values():
            fit(prep, warm, data.g)

    print(f"host: {platform.node()} {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start")  # fmt: skip
    print(f"torch {torch.__version__}, device {device_name(device)}, "
          f"dtype {args.dtype or DEFAULT_DTYPES}; budget {budget:g} s per cell")  # fmt: skip
    print(f"model 109725 ({model.n_permutable} W), {prep.n_classes} pair classes, "
          f"{len(prep.pairs.a)} pairs, rank {prep.basis.rank}, {len(data.r)} points")  # fmt: skip
    print()
    head = "| mode | catalogue | numpy fitted | numpy fits/s | torch fitted | torch fits/s |"
    print(head + " torch / numpy | max abs dRwp |")
    print("|---|---|---|---|---|---|---|---|")
    for mode in args.modes:
        for n in args.sizes:
            masks = random_catalogue(model.n_permutable, n, seed=0)
            cells = {}
            for name, (fit, chunk) in table[mode].items():
                time.sleep(0.5)  # OpenBLAS's idle threads spin a while after a threaded call
                cells[name] = run_cell(fit, prep, masks, data.g, chunk, budget)
            (n_np, t_np, r_np), (n_t, t_t, r_t) = cells["numpy"], cells["torch"]
            common = min(n_np, n_t)
            diff = float(np.abs(r_np[:common] - r_t[:common]).max())
            rate_np, rate_t = n_np / t_np, n_t / t_t
            print(
                f"| {mode} | {n:,} | {n_np:,} | {rate_np:,.0f} | {n_t:,} | {rate_t:,.0f} | "
                f"{rate_t / rate_np:.2f} | {diff:.1e} |",
                flush=True,
            )
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
