"""How the engine scales with model size and catalogue size: pair classes, preparation time,
isotropic fits/s and peak RSS.

Starting models of about 100, 300 and 1,000 atoms are built from the bundled cells: β-Ga2O3
supercells (the 1×1×1 cluster repeated along the monoclinic cell vectors, coincident atoms
merged; Ga permuted) and a block of repeated α-Keggin clusters (109725, W permuted). Each
model is prepared once in a child process; each catalogue size is fitted in a forked
grandchild, so the peak RSS printed for a row is the preparation plus that catalogue's fits and
nothing else. A row stops after ``--budget`` seconds of fitting and says how many motifs it
fitted (fits/s is then measured on those); a model whose preparation takes longer than
``--prep-budget`` seconds is reported as such. The baseline in the same run is the bundled
109725 model (24 W, the paper's case).

Usage: python benchmarks/bench_scaling.py [--catalogues 10000,100000] [--budget 60]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import time
from pathlib import Path

import numpy as np

from motex_stream.analysis.steps import FIT_CHUNK, default_pdf_settings
from motex_stream.catalogue import random_catalogue
from motex_stream.fitting.grfile import read_gr
from motex_stream.fitting.isotropic import fit_isotropic
from motex_stream.pdf.batched import prepare_model
from motex_stream.structure.starting_model import _read_atoms, build_starting_model

DATA = Path(__file__).resolve().parents[1] / "motex_stream" / "data"

# β-Ga2O3 (C2/m): a, b, c (Å) and β (degrees), ICSD 83645
GA2O3_CELL = (12.214, 3.0371, 5.7981, 103.83)


def ga2o3_supercell(n: tuple[int, int, int]) -> tuple[list[str], np.ndarray]:
    symbols, pos = _read_atoms(DATA / "ga2o3" / "beta-Ga2O3_CollCode83645_1x1x1.xyz")
    a, b, c, beta = GA2O3_CELL
    beta = np.radians(beta)
    vectors = np.array([[a, 0, 0], [0, b, 0], [c * np.cos(beta), 0, c * np.sin(beta)]])
    out_s, out_p = [], []
    for i in range(n[0]):
        for j in range(n[1]):
            for k in range(n[2]):
                shift = np.array([i, j, k]) @ vectors
                out_s += list(symbols)
                out_p.append(pos + shift)
    return _merge(out_s, np.vstack(out_p))


def keggin_block(n: int) -> tuple[list[str], np.ndarray]:
    """``n`` 109725 clusters on a cubic grid, 4 Å between their bounding boxes."""
    symbols, pos = _read_atoms(DATA / "keggin" / "109725.xyz")
    pos = pos - pos.mean(axis=0)
    step = np.ptp(pos, axis=0).max() + 4.0
    side = int(np.ceil(n ** (1 / 3)))
    out_s, out_p = [], []
    for idx in range(n):
        i, j, k = idx // (side * side), (idx // side) % side, idx % side
        out_s += list(symbols)
        out_p.append(pos + step * np.array([i, j, k]))
    return out_s, np.vstack(out_p)


def _merge(symbols: list[str], pos: np.ndarray, tol: float = 0.3) -> tuple[list[str], np.ndarray]:
    keep: list[int] = []
    for i, p in enumerate(pos):
        if not keep or np.min(np.linalg.norm(pos[keep] - p, axis=1)) > tol:
            keep.append(i)
    return [symbols[i] for i in keep], pos[keep]


def models() -> list[tuple[str, list[str], np.ndarray, list[str], str]]:
    s0, p0 = _read_atoms(DATA / "keggin" / "109725.xyz")
    keggin_gr = str(DATA / "keggin" / "DanMAX_AlphaKeggin.gr")
    ga_gr = str(DATA / "ga2o3" / "amorphousFit_Gobs.dat")
    return [
        ("109725 (baseline)", list(s0), p0, ["W"], keggin_gr),
        ("Ga2O3 1x2x1", *ga2o3_supercell((1, 2, 1)), ["Ga"], ga_gr),
        ("Ga2O3 2x2x2", *ga2o3_supercell((2, 2, 2)), ["Ga"], ga_gr),
        ("Keggin 109725 x10", *keggin_block(10), ["W"], keggin_gr),
    ]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def fit_catalogue(engine, g, size: int, budget: float, out) -> None:  # type: ignore[no-untyped-def]
    masks = random_catalogue(engine.model.n_permutable, size, 0)
    t0 = time.perf_counter()
    done = 0
    for start in range(0, size, FIT_CHUNK):
        fit_isotropic(engine, masks[start : start + FIT_CHUNK], g)
        done = min(size, start + FIT_CHUNK)
        if time.perf_counter() - t0 > budget:
            break
    out.put((done, time.perf_counter() - t0, peak_rss_mb()))


def run_model(name, symbols, pos, permute, gr, catalogues, budget, out) -> None:  # type: ignore[no-untyped-def]
    data = read_gr(gr).crop(1.6, 10.0)
    model = build_starting_model(symbols, pos, permute, 2.5 if permute == ["W"] else 2.2)
    t = time.perf_counter()
    engine = prepare_model(model, default_pdf_settings(data.r), data.r)
    prep = time.perf_counter() - t
    fit_isotropic(engine, random_catalogue(model.n_permutable, 64, 1), data.g)  # tables, JIT
    out.put(("prep", len(symbols), model.n_permutable, engine.n_classes, prep, peak_rss_mb()))
    ctx = mp.get_context("fork")
    for size in catalogues:
        if size > 2 ** (model.n_permutable - 1):  # distinct motifs: the space is too small
            out.put(("skip", size, 2**model.n_permutable))
            continue
        q = ctx.Queue()
        p = ctx.Process(target=fit_catalogue, args=(engine, data.g, size, budget, q))
        p.start()
        out.put(("fit", size, *q.get()))
        p.join()
    out.put(("end",))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--catalogues", default="10000,100000")
    ap.add_argument("--budget", type=float, default=60.0, help="seconds of fitting per row")
    ap.add_argument("--prep-budget", type=float, default=300.0)
    args = ap.parse_args()
    catalogues = [int(float(c)) for c in args.catalogues.split(",")]
    ctx = mp.get_context("fork")
    print(
        "| starting model | atoms | permutable | pair classes | preparation (s) | catalogue "
        "| fitted | fits/s (isotropic) | peak RSS (MB) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, symbols, pos, permute, gr in models():
        q = ctx.Queue()
        p = ctx.Process(
            target=run_model, args=(name, symbols, pos, permute, gr, catalogues, args.budget, q)
        )
        p.start()
        try:
            _, n_atoms, n_perm, n_classes, prep, _rss = q.get(timeout=args.prep_budget)
        except Exception:
            p.kill()
            print(f"| {name} | {len(symbols)} | | | > {args.prep_budget:.0f} (stopped) | | | | |")
            continue
        while True:
            msg = q.get()
            if msg[0] == "end":
                break
            if msg[0] == "skip":
                print(
                    f"| {name} | {n_atoms} | {n_perm} | {n_classes:,} | {prep:.1f} | {msg[1]:,} "
                    f"| – (only {msg[2]:,} motifs exist) | | |"
                )
                continue
            _, size, done, wall, rss = msg
            print(
                f"| {name} | {n_atoms} | {n_perm} | {n_classes:,} | {prep:.1f} | {size:,} "
                f"| {done:,} | {done / wall:,.0f} | {rss:,.0f} |",
                flush=True,
            )
        p.join()


if __name__ == "__main__":
    main()
