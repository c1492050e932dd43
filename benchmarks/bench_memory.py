"""Peak memory and time of a whole ``analyze`` against catalogue size (issue 13).

Each row is one ``run_analysis`` of the DanMAX α-Keggin data on the 109725 model (24 W) in a
fresh child process, so its peak RSS is that analysis' alone. Two settings per catalogue
size, in the same run:

* ``bounded``: the defaults — the surrogate is trained on at most ``train_rows`` motifs
  (10^6) and SHAP explains at most ``explain_rows`` (10^5), both seeded subsamples;
* ``whole`` (the baseline): ``train_rows`` and ``explain_rows`` set to the catalogue size, so
  every motif is trained on and explained, as before the bounds existed. Only up to
  ``--whole-max`` motifs: above it the whole training runs for most of an hour.

Both rows fit every motif. Printed: stage times, peak RSS, the surrogate's held-out MAE and
whether the bounded run labels every atom as the whole run does.

Usage: python benchmarks/bench_memory.py [--catalogues 100000,1000000,10000000]
       [--whole-max 1000000] [--search-calls 4]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "motex_stream" / "data" / "keggin"


def analyse(size: int, bounded: bool, search_calls: int, out: mp.Queue) -> None:
    """One analysis in this (child) process; puts its row on ``out``."""
    from motex_stream.analysis.pipeline import run_analysis
    from motex_stream.analysis.settings import ModelSettings

    changes = {} if bounded else {"train_rows": size, "explain_rows": size}
    settings = ModelSettings(
        starting_model=DATA / "109725.xyz",
        catalogue_size=size,
        search_calls=search_calls,
        **changes,
    )
    t = time.perf_counter()
    result = run_analysis(DATA / "DanMAX_AlphaKeggin.gr", settings)
    wall = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out.put(
        {
            "wall": wall,
            "timings": result.timings,
            "peak_mb": peak,
            "test_mae": result.test_mae,
            "trained": result.extra["surrogate"]["train"] + result.extra["surrogate"]["test"],
            "explained": result.contributions.n_explained,
            "labels": list(result.intervals.label) if result.intervals is not None else [],
        }
    )


def run(size: int, bounded: bool, search_calls: int) -> dict:
    ctx = mp.get_context("spawn")  # a clean interpreter: nothing of the parent's memory
    q = ctx.Queue()
    p = ctx.Process(target=analyse, args=(size, bounded, search_calls, q))
    p.start()
    row = q.get()
    p.join()
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--catalogues", default="100000,1000000,10000000")
    ap.add_argument("--whole-max", type=int, default=1_000_000)
    ap.add_argument("--search-calls", type=int, default=4)
    args = ap.parse_args()
    sizes = [int(s) for s in args.catalogues.split(",")]
    print(f"cores: {os.cpu_count()}, load average at start: {os.getloadavg()[0]:.1f}")
    head = (
        "| catalogue | settings | trained on | explained | wall (s) | fit (s) | train (s) | "
        "explain (s) | intervals (s) | peak RSS (MB) | RSS vs whole | test MAE | labels as whole |"
    )
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for size in sizes:
        whole = run(size, False, args.search_calls) if size <= args.whole_max else None
        bounded = run(size, True, args.search_calls)
        for name, row in (("whole", whole), ("bounded", bounded)):
            if row is None:
                print(f"| {size:,} | whole | not run (> --whole-max) | | | | | | | | | | |")
                continue
            t = row["timings"]
            ratio = f"{row['peak_mb'] / whole['peak_mb']:.2f}" if whole else "–"
            same = (
                "–"
                if whole is None or name == "whole"
                else f"{sum(a == b for a, b in zip(row['labels'], whole['labels'], strict=True))}"
                f"/{len(row['labels'])}"
            )
            print(
                f"| {size:,} | {name} | {row['trained']:,} | {row['explained']:,} | "
                f"{row['wall']:.0f} | {t['fit']:.1f} | {t['train']:.1f} | {t['explain']:.1f} | "
                f"{t['intervals']:.1f} | {row['peak_mb']:,.0f} | {ratio} | "
                f"{row['test_mae']:.5f} | {same} |",
                flush=True,
            )
    print(f"load average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
