"""How the engine scales with model size and catalogue size: pair classes, preparation time
(before/after the tabulated class kernels, same run), isotropic fits/s and peak RSS.

Starting models of about 100, 300 and 1,000 atoms are built from the bundled cells: β-Ga2O3
supercells (the 1×1×1 cluster repeated along the monoclinic cell vectors, coincident atoms
merged; Ga permuted) and a block of repeated α-Keggin clusters (109725, W permuted). Each
model is prepared in a child process twice, alternately: with the class kernels interpolated
from per-kind distance tables (the default, "after") and with every pair evaluated at every
zoom (``exact_kernels=True``, the former method, "before"); the largest Rwp difference between
the two on 2,000 motifs is printed as the parity check. Each catalogue size is then drawn
bit-packed and fitted streaming (unpacked one chunk of ``FIT_CHUNK`` motifs at a time, results
kept for every motif) in a forked grandchild, so the peak RSS printed for a row is the engine
plus that catalogue and its results, nothing else. A row stops after ``--budget`` seconds of
fitting and says how many motifs it fitted (fits/s is then measured on those); CPU seconds are
printed beside wall time because the machine is shared. "fit tables" is the isotropic
engine's class-space basis (built once per model, on its first fit). The baseline in the same
run is the bundled 109725 model (24 W, the paper's case).

Usage: python benchmarks/bench_scaling.py [--catalogues 10000,1000000] [--budget 60]
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
from motex_stream.catalogue.storage import iter_unpacked
from motex_stream.fitting.grfile import read_gr
from motex_stream.fitting.isotropic import _engine_tables, fit_isotropic
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
    """Draw ``size`` motifs bit-packed, fit them streaming; report what the row prints."""
    t = time.perf_counter()
    packed = random_catalogue(engine.model.n_permutable, size, 0, packed=True)
    t_draw = time.perf_counter() - t
    rwp, scale, zoom = np.empty(size), np.empty(size), np.empty((size, 3))
    t0, c0 = time.perf_counter(), time.process_time()
    done = 0
    for start, masks in iter_unpacked(packed, engine.model.n_permutable, FIT_CHUNK):
        res = fit_isotropic(engine, masks, g)
        sl = slice(start, start + len(masks))
        rwp[sl], scale[sl], zoom[sl] = res.rwp, res.scale, res.zoom
        done = start + len(masks)
        if time.perf_counter() - t0 > budget:
            break
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    out.put((done, wall, cpu, peak_rss_mb(), t_draw, packed.nbytes / 2**20))


def run_model(name, symbols, pos, permute, gr, catalogues, budget, before, out) -> None:  # type: ignore[no-untyped-def]
    data = read_gr(gr).crop(1.6, 10.0)
    model = build_starting_model(symbols, pos, permute, 2.5 if permute == ["W"] else 2.2)
    settings = default_pdf_settings(data.r)
    prepare_model(model, settings, data.r)  # first use: numba's compiled-kernel cache
    after_s, before_s = [], []
    exact = None
    for _ in range(2 if before else 1):  # alternate, so both see the same neighbours
        t = time.perf_counter()
        engine = prepare_model(model, settings, data.r)
        after_s.append(time.perf_counter() - t)
        if before:
            t = time.perf_counter()
            exact = prepare_model(model, settings, data.r, exact_kernels=True)
            before_s.append(time.perf_counter() - t)
    # the isotropic engine's class-space basis, built once per model on its first fit
    t = time.perf_counter()
    _engine_tables(engine)
    tables_s = time.perf_counter() - t
    parity = float("nan")
    masks = random_catalogue(model.n_permutable, 2000, 1)
    new = fit_isotropic(engine, masks, data.g)  # also builds the engine tables and JITs
    if exact is not None:
        ref = fit_isotropic(exact, masks, data.g)
        parity = float(np.max(np.abs(new.rwp - ref.rwp) / ref.rwp))
        del exact, ref
    out.put(
        (
            "prep",
            len(symbols),
            model.n_permutable,
            engine.n_classes,
            min(before_s) if before_s else float("nan"),
            min(after_s),
            parity,
            tables_s,
        )
    )
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
    ap.add_argument("--prep-budget", type=float, default=600.0)
    ap.add_argument("--no-before", action="store_true", help="skip the former (exact) preparation")
    ap.add_argument("--models", default="", help="comma-separated name prefixes to run")
    args = ap.parse_args()
    catalogues = [int(float(c)) for c in args.catalogues.split(",")]
    ctx = mp.get_context("fork")
    print(
        "| starting model | atoms | permutable | pair classes | preparation before → after (s) "
        "| fit tables (s) | catalogue | fitted | fits/s (isotropic) | fits per CPU-s "
        "| peak RSS (MB) | max rel. ΔRwp after vs before |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    wanted = [w for w in args.models.split(",") if w]
    for name, symbols, pos, permute, gr in models():
        if wanted and not any(name.startswith(w) for w in wanted):
            continue
        q = ctx.Queue()
        p = ctx.Process(
            target=run_model,
            args=(
                name,
                symbols,
                pos,
                permute,
                gr,
                catalogues,
                args.budget,
                not args.no_before,
                q,
            ),
        )
        p.start()
        try:
            _, n_atoms, n_perm, n_classes, before, after, parity, tables_s = q.get(
                timeout=args.prep_budget
            )
        except Exception:
            p.kill()
            print(
                f"| {name} | {len(symbols)} | | | > {args.prep_budget:.0f} (stopped) "
                "| | | | | | | |"
            )
            continue
        prep = (
            f"{before:.2f} → {after:.2f} ({before / after:.1f}×)"
            if before == before
            else (f"{after:.2f}")
        )
        while True:
            msg = q.get()
            if msg[0] == "end":
                break
            if msg[0] == "skip":
                print(
                    f"| {name} | {n_atoms} | {n_perm} | {n_classes:,} | {prep} | {tables_s:.2f} "
                    f"| {msg[1]:,} | – (only {msg[2]:,} motifs exist) | | | | |"
                )
                continue
            _, size, done, wall, cpu, rss, t_draw, packed_mb = msg
            print(
                f"| {name} | {n_atoms} | {n_perm} | {n_classes:,} | {prep} | {tables_s:.2f} "
                f"| {size:,} "
                f"(drawn in {t_draw:.1f} s, {packed_mb:.1f} MB packed) | {done:,} "
                f"| {done / wall:,.0f} | {done / cpu:,.0f} | {rss:,.0f} | {parity:.1e} |",
                flush=True,
            )
        p.join()


if __name__ == "__main__":
    main()
