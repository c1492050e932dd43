"""The paper's α-Keggin results on all four starting models, and the C60 proof of concept.

Prints, per starting model and seed, how many of the k most negative W fall outside complete
α-Keggin units (12-W connected components of the W-W graph), with catalogue size and time.
Usage: python benchmarks/paper_results.py [--catalogue 10000] [--seeds 0 1 2] [--c60]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from motex_stream.analysis.pipeline import run_analysis
from motex_stream.analysis.settings import ModelSettings
from motex_stream.structure import load_starting_model
from motex_stream.structure.units import mislabelled, permutable_units

DATA = Path(__file__).resolve().parents[1] / "motex_stream" / "data" / "keggin"
MODELS = {"109725": 12, "110457": 24, "166877": 24, "ABOCIE_real_111sc": 24}


def keggin(catalogue: int, seeds: list[int], zoom: str) -> None:
    print(
        f"{'model':20s} {'N W':>4s} {'k':>3s} {'seed':>4s} {'catalogue':>9s} "
        f"{'mislabelled':>11s} {'test MAE':>8s} {'s':>6s}"
    )
    for name, k in MODELS.items():
        model = load_starting_model(DATA / f"{name}.xyz", ["W"], 2.5)
        units = [u for u in permutable_units(model, 3.9) if len(u) == 12]
        for seed in seeds:
            t = time.perf_counter()
            res = run_analysis(
                DATA / "DanMAX_AlphaKeggin.gr",
                ModelSettings(
                    starting_model=DATA / f"{name}.xyz",
                    catalogue_size=catalogue,
                    seed=seed,
                    qmax=20.0,
                    zoom=zoom,
                ),
                model=model,
            )
            top = res.contributions.ranking()[:k]
            bad = mislabelled(top, units)
            print(
                f"{name:20s} {model.n_permutable:4d} {k:3d} {seed:4d} {catalogue:9d} "
                f"{bad:11d} {res.test_mae:8.4f} {time.perf_counter() - t:6.1f}",
                flush=True,
            )


def c60(catalogue: int, seed: int) -> None:
    from motex_stream.analysis.c60 import c60_experiment

    t = time.perf_counter()
    found, n_atoms, mae = c60_experiment(Path("/tmp/motex-c60"), catalogue, seed)
    print(
        f"C60: starting model {n_atoms} C atoms, catalogue {catalogue}: {found}/60 of the 60 "
        f"most negative atoms are the central buckyball (test MAE {mae:.4f}, "
        f"{time.perf_counter() - t:.0f} s)"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--catalogue", type=int, default=10_000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--zoom", default="isotropic")
    ap.add_argument("--c60", action="store_true")
    ap.add_argument("--c60-catalogue", type=int, default=30_000)
    args = ap.parse_args()
    keggin(args.catalogue, args.seeds, args.zoom)
    if args.c60:
        c60(args.c60_catalogue, args.seeds[0])


if __name__ == "__main__":
    main()
