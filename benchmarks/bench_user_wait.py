"""Issue 23: what the user waits for — `fit` file handling and `analyze` wall time.

`fit` (109725.xyz, DanMAX data, isotropic): marginal rate (M2 - M1) / (t(M2) - t(M1)), so
fixed costs (imports, engine preparation) cancel, for
  - the engine alone (``steps.fit_masks`` on masks in memory),
  - CSV in → fit → CSV out with this tree's numpy readers/writers (``fit_command``),
  - the same with the former ``csv``-module reader and ``%.10g`` writer, kept here only as
    the baseline,
all timed in this process on the same masks, alternately, best of ``--repeats``; plus the
``motex-stream fit`` command itself (subprocess, CSV and .npz input), marginal over M1/M2.

`analyze` (README command, ``--catalogue``): the wall clock of the command as a subprocess
against the ``total`` it prints, for this tree and for ``--baseline-ref`` (a git ref, run from
a ``git archive`` of it, same interpreter) or ``--baseline-tree`` (a checked-out tree, e.g.
``git worktree add /tmp/base HEAD``), alternated ``--analyze-repeats`` times; each run's
phases from its report.json (start-up, engine preparation, search, final fit, explain,
intervals, ..., wall to the answer, plots, wall) and their medians; and whether every run's
contributions.csv is byte-identical. ``--analyze 0`` skips it.

Prints the load (``os.getloadavg``) at each measurement: on a shared machine absolute times
are inflated, the ratios less so.
Usage: python benchmarks/bench_user_wait.py [--m1 10000] [--m2 100000] [--analyze 10000]
       [--baseline-ref 6db11bb | --baseline-tree /tmp/base23] [--analyze-repeats 3] [--skip-fit]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import resource
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from io import BytesIO
from pathlib import Path

import numpy as np

from motex_stream.analysis import steps
from motex_stream.analysis.fit_command import read_mask_table, write_fits
from motex_stream.analysis.settings import ModelSettings

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "motex_stream" / "data" / "keggin"
GR = DATA / "DanMAX_AlphaKeggin.gr"
MODEL = DATA / "109725.xyz"
PDF_FLAGS = ["--rmin", "1.6", "--rmax", "10", "--qdamp", "0.05", "--qbroad", "0.01"]
PDF_FLAGS += ["--biso", "0.4"]
#: the installed command's entry point (main() with no argv: times from process creation)
CLI = "import sys; from motex_stream.cli import main; sys.exit(main())"


def load() -> str:
    return "load {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


# ------------------------------------------------------------------ the former file handling


def old_read(path: Path, n: int) -> tuple[list[str], np.ndarray]:
    """The reader `fit` used before issue 23: csv.DictReader, int(float()) per cell."""
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        cols = [f"w{i}" for i in range(1, n + 1)]
        has_id = "id" in (reader.fieldnames or [])
        rows, ids = [], []
        for row in reader:
            rows.append([int(float(row[c])) for c in cols])
            ids.append(str(row["id"]) if has_id else str(len(ids)))
    return ids, np.array(rows, dtype=bool)


def old_write(path: Path, ids: list[str], masks: np.ndarray, fits: object) -> None:
    """The writer `fit` used before issue 23: csv.writer, %.10g per number."""
    n = masks.shape[1]
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(
            ["id", "n_kept", "rwp", "scale", "zoom1", "zoom2", "zoom3"]
            + [f"w{j}" for j in range(1, n + 1)]
        )
        for i in range(len(masks)):
            w.writerow(
                [
                    ids[i],
                    int(masks[i].sum()),
                    f"{fits.rwp[i]:.10g}",  # type: ignore[attr-defined]
                    f"{fits.scale[i]:.10g}",  # type: ignore[attr-defined]
                    *(f"{z:.10g}" for z in fits.zoom[i]),  # type: ignore[attr-defined]
                    *masks[i].astype(int).tolist(),
                ]
            )


# ------------------------------------------------------------------ fit


def write_mask_csv(path: Path, masks: np.ndarray) -> None:
    bits = np.full((len(masks), 2 * masks.shape[1]), ord(","), dtype=np.uint8)
    bits[:, 0::2] = masks.astype(np.uint8) + ord("0")
    bits[:, -1] = ord("\n")
    header = ",".join(f"w{i}" for i in range(1, masks.shape[1] + 1)) + "\n"
    path.write_bytes(header.encode() + bits.tobytes())


def bench_fit(args: argparse.Namespace, tmp: Path) -> None:
    settings = ModelSettings(
        starting_model=str(MODEL), permute=["W"], threshold=2.5, rmin=1.6, rmax=10.0,
        qdamp=0.05, qbroad=0.01, biso=0.4,
    )  # fmt: skip
    data = steps.load_fit_data(GR, settings)
    model = steps.load_model(data.settings)
    engine = steps.prepare_engine(model, data.settings, data.r)
    zoom = data.settings.zoom
    rng = np.random.default_rng(0)
    all_masks = rng.random((args.m2, model.n_permutable)) < 0.5
    files = {}
    for m in (args.m1, args.m2):
        files[m] = tmp / f"masks{m}.csv"
        write_mask_csv(files[m], all_masks[:m])
        np.savez(tmp / f"masks{m}.npz", masks_packed=np.packbits(all_masks[:m], axis=1),
                 n_permutable=model.n_permutable)  # fmt: skip
    steps.fit_masks(engine, all_masks[:2000], data.g, zoom)  # warm up (compile, BLAS)

    def engine_only(m: int) -> None:
        steps.fit_masks(engine, all_masks[:m], data.g, zoom)

    def new_io(m: int) -> None:
        ids, masks = read_mask_table(files[m], model.n_permutable)
        f = steps.fit_masks(engine, masks, data.g, zoom)
        write_fits(tmp / "new.csv", ids, masks, f.rwp, f.scale, f.zoom)

    def old_io(m: int) -> None:
        ids, masks = old_read(files[m], model.n_permutable)
        f = steps.fit_masks(engine, masks, data.g, zoom)
        old_write(tmp / "old.csv", ids, masks, f)

    ways: dict[str, Callable[[int], None]] = {
        "engine alone (masks in memory)": engine_only,
        "CSV in/out, numpy (this tree)": new_io,
        "CSV in/out, csv module (before)": old_io,
    }
    if args.skip_before:  # ~80 s per 10^6 masks
        del ways["CSV in/out, csv module (before)"]
    best: dict[tuple[str, int], float] = {}
    cpu: dict[tuple[str, int], list[float]] = {}
    print(f"fit, in process, {load()}")
    for _ in range(args.repeats):  # alternate, so every way sees the same neighbours
        for name, fn in ways.items():
            for m in (args.m1, args.m2):
                time.sleep(0.3)
                t, c = time.perf_counter(), time.process_time()
                fn(m)
                dt = time.perf_counter() - t
                best[name, m] = min(best.get((name, m), np.inf), dt)
                cpu.setdefault((name, m), []).append(time.process_time() - c)
    rates = {
        name: (args.m2 - args.m1) / (best[name, args.m2] - best[name, args.m1]) for name in ways
    }
    base = rates.get("CSV in/out, csv module (before)", np.nan)
    eng = rates["engine alone (masks in memory)"]
    print(f"{'':34s} {'t(M1) s':>8s} {'t(M2) s':>8s} {'marginal fits/s':>16s} "
          f"{'vs before':>10s} {'vs engine':>10s} {'CPU µs/fit':>11s}")  # fmt: skip
    for name in ways:
        r = rates[name]
        print(f"{name:34s} {best[name, args.m1]:8.2f} {best[name, args.m2]:8.2f} "
              f"{r:16,.0f} {r / base:9.2f}× {r / eng:9.2f}× "
              f"{marginal_cpu_us(cpu, name, args):11.2f}")  # fmt: skip
    print(f"(M1 = {args.m1:,}, M2 = {args.m2:,} masks; best of {args.repeats}; {load()})")

    # the command itself, as the user runs it
    cmd = [sys.executable, "-c", CLI, "fit", str(GR), "--model", str(MODEL),
           *PDF_FLAGS]  # fmt: skip
    command_marginal(cmd, tmp, "masks", args, eng)


#: the fit command's last line: "fitted M masks in T s (...); wall W s: start-up S s, engine
#: preparation P s, reading R s, writing X s; wrote ..."
_FIT_LINE = re.compile(
    r"fitted ([0-9,]+) masks in ([0-9.]+) s .*wall ([0-9.]+) s: start-up ([0-9.]+) s, "
    r"engine preparation ([0-9.]+) s, reading ([0-9.]+) s, writing ([0-9.]+) s"
)
_FIT_PHASES = ("fit", "wall", "start-up", "engine", "read", "write")


def children_cpu() -> float:
    """User + system CPU seconds of the finished child processes (all their threads)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def marginal_cpu_us(cpu: dict[tuple[str, int], list[float]], way: str, args) -> float:  # type: ignore[no-untyped-def]
    """CPU µs per fit from M1 to M2 (medians): unlike the wall, hardly moved by neighbours
    taking the cores, so it compares the work of the ways on a loaded machine."""
    a, b = (float(np.median(cpu[way, m])) for m in (args.m1, args.m2))
    return 1e6 * (b - a) / (args.m2 - args.m1)


def command_marginal(
    cmd: list[str], tmp: Path, stem: str, args: argparse.Namespace, eng: float
) -> None:
    """`motex-stream fit` as a subprocess on ``tmp/{stem}{M}.{csv,npz}``, M1 and M2 (and the
    trees: this one, and ``--cmd-baseline-ref`` when given) alternated ``--repeats`` times:
    the marginal rate from the wall clock measured outside (best and median of the runs),
    from the command's own printed split (median of reading + fitting + writing, which
    leaves out start-up and engine preparation, whose run-to-run spread under load is
    larger than the whole M1 → M2 difference), and its marginal CPU per fit."""
    trees = [("this tree", ROOT)]
    if args.cmd_baseline_ref:
        where = tmp / f"cmd-baseline-{stem}"
        trees.insert(0, (f"before ({args.cmd_baseline_ref})",
                         git_tree(args.cmd_baseline_ref, where)))  # fmt: skip
    print(f"\n`motex-stream fit` command (subprocess), {load()}")
    for _, tree in trees:  # warm: numba cache, page cache
        subprocess.run(
            [*cmd, "--masks", str(tmp / f"{stem}{args.m1}.csv"), "--out", str(tmp / "cmd.csv")],
            check=True,
            capture_output=True,
            env={**os.environ, "PYTHONPATH": str(tree)},
        )
    for ext in ("csv", "npz"):
        walls: dict[tuple[str, int], list[float]] = {}
        split: dict[tuple[str, int], list[tuple[float, ...]]] = {}
        cpu: dict[tuple[str, int], list[float]] = {}
        loads = []
        for _ in range(args.repeats):
            for name, tree in trees:
                for m in (args.m1, args.m2):
                    loads.append(os.getloadavg()[0])
                    t, c = time.perf_counter(), children_cpu()
                    out = subprocess.run(
                        [*cmd, "--masks", str(tmp / f"{stem}{m}.{ext}"), "--out",
                         str(tmp / "cmd.csv")], check=True, capture_output=True, text=True,
                        env={**os.environ, "PYTHONPATH": str(tree)}).stdout  # fmt: skip
                    walls.setdefault((name, m), []).append(time.perf_counter() - t)
                    cpu.setdefault((name, m), []).append(children_cpu() - c)
                    hit = _FIT_LINE.search(out)
                    if hit:
                        split.setdefault((name, m), []).append(
                            tuple(float(x) for x in hit.groups()[1:])
                        )
        dm = args.m2 - args.m1
        print(f"  {ext} in (load {min(loads):.1f}-{max(loads):.1f}):")
        for name, _ in trees:
            w1, w2 = walls[name, args.m1], walls[name, args.m2]
            best = dm / (min(w2) - min(w1))
            med = dm / (float(np.median(w2)) - float(np.median(w1)))
            print(f"    {name}: wall (best) {min(w1):.2f} s ({args.m1:,}), {min(w2):.2f} s "
                  f"({args.m2:,}); marginal from the wall: best {best:,.0f}, median "
                  f"{med:,.0f} fits/s ({best / eng:.2f}×, {med / eng:.2f}× the engine "
                  f"alone); CPU {marginal_cpu_us(cpu, name, args):.2f} µs/fit (marginal, "
                  f"median, all threads)")  # fmt: skip
            if (name, args.m1) in split and (name, args.m2) in split:
                med_split = {m: np.median(np.array(split[name, m]), axis=0)
                             for m in (args.m1, args.m2)}  # fmt: skip
                for m in (args.m1, args.m2):
                    parts = zip(_FIT_PHASES, med_split[m], strict=True)
                    print(f"      {m:>9,}: median " + ", ".join(f"{k} {v:.2f} s" for k, v in parts))
                work = {m: v[0] + v[4] + v[5] for m, v in med_split.items()}
                r = dm / (work[args.m2] - work[args.m1])
                print(f"      marginal of the command's own read + fit + write: {r:,.0f} "
                      f"fits/s ({r / eng:.2f}× the engine alone)")  # fmt: skip


# ------------------------------------------------------------------ large model


def bench_large(args: argparse.Namespace, tmp: Path) -> None:
    """The issue's large-model bar: β-Ga2O3 2×2×2 (276 atoms, 80 Ga permuted, the
    amorphous-fit data), `fit` ≥ 30k fits/s. The engine alone and CSV in/out in this process,
    then the command, marginal M1 → M2, same run."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_scaling import ga2o3_supercell

    symbols, pos = ga2o3_supercell((2, 2, 2))
    xyz = tmp / "ga2o3_2x2x2.xyz"
    lines = [f"{el} {x:.6f} {y:.6f} {z:.6f}\n" for el, (x, y, z) in zip(symbols, pos, strict=True)]
    xyz.write_text(f"{len(symbols)}\nbeta-Ga2O3 2x2x2\n" + "".join(lines))
    gr = ROOT / "motex_stream" / "data" / "ga2o3" / "amorphousFit_Gobs.dat"
    flags = ["--permute", "Ga", "--threshold", "2.2", "--rmin", "1.6", "--rmax", "10"]
    settings = ModelSettings(starting_model=str(xyz), permute=["Ga"], threshold=2.2,
                             rmin=1.6, rmax=10.0)  # fmt: skip
    data = steps.load_fit_data(gr, settings)
    model = steps.load_model(data.settings)
    t = time.perf_counter()
    engine = steps.prepare_engine(model, data.settings, data.r)
    t_prep = time.perf_counter() - t
    zoom = data.settings.zoom
    all_masks = np.random.default_rng(0).random((args.m2, model.n_permutable)) < 0.5
    for m in (args.m1, args.m2):
        write_mask_csv(tmp / f"ga{m}.csv", all_masks[:m])
        np.savez(tmp / f"ga{m}.npz", masks_packed=np.packbits(all_masks[:m], axis=1),
                 n_permutable=model.n_permutable)  # fmt: skip
    t = time.perf_counter()
    steps.fit_masks(engine, all_masks[:2000], data.g, zoom)  # the engine tables, JIT
    t_first = time.perf_counter() - t
    print(f"\nlarge model: {len(symbols)} atoms, {model.n_permutable} Ga permuted; engine "
          f"preparation {t_prep:.2f} s, first 2,000 fits {t_first:.2f} s; {load()}")  # fmt: skip

    def engine_only(m: int) -> None:
        steps.fit_masks(engine, all_masks[:m], data.g, zoom)

    def csv_io(m: int) -> None:
        ids, masks = read_mask_table(tmp / f"ga{m}.csv", model.n_permutable)
        f = steps.fit_masks(engine, masks, data.g, zoom)
        write_fits(tmp / "ga_out.csv", ids, masks, f.rwp, f.scale, f.zoom)

    ways = {"engine alone (masks in memory)": engine_only, "CSV in/out, in process": csv_io}
    best: dict[tuple[str, int], float] = {}
    cpu: dict[tuple[str, int], list[float]] = {}
    for _ in range(args.repeats):
        for name, fn in ways.items():
            for m in (args.m1, args.m2):
                t, c = time.perf_counter(), time.process_time()
                fn(m)
                best[name, m] = min(best.get((name, m), np.inf), time.perf_counter() - t)
                cpu.setdefault((name, m), []).append(time.process_time() - c)
    rates = {n: (args.m2 - args.m1) / (best[n, args.m2] - best[n, args.m1]) for n in ways}
    eng = rates["engine alone (masks in memory)"]
    for name in ways:
        print(f"  {name:34s} {best[name, args.m1]:7.2f} s {best[name, args.m2]:7.2f} s "
              f"marginal {rates[name]:10,.0f} fits/s ({rates[name] / eng:.2f}×); CPU "
              f"{marginal_cpu_us(cpu, name, args):.2f} µs/fit")  # fmt: skip
    print(f"  (M1 = {args.m1:,}, M2 = {args.m2:,}; best of {args.repeats}; {load()})")
    cmd = [sys.executable, "-c", CLI, "fit", str(gr), "--model", str(xyz), *flags]
    command_marginal(cmd, tmp, "ga", args, eng)


# ------------------------------------------------------------------ interval ensemble


def bench_ensemble(args: argparse.Namespace) -> None:
    """Issue 23: the interval ensemble's members one at a time vs two at a time
    (``explain.confidence.ENSEMBLE_WORKERS``), on the README analyze's own inputs (109725,
    10,000 motifs, seed 0, the searched points; ``ci_models`` 4, ``ci_rows`` 2,500):
    alternated, wall and CPU per call, best and median of ``--ensemble`` calls each, and
    whether every call gave the same bytes."""
    from motex_stream.explain.confidence import ensemble_contributions
    from motex_stream.model.search import Hyperparameters

    settings = ModelSettings(
        starting_model=str(MODEL), permute=["W"], threshold=2.5, rmin=1.6, rmax=10.0,
        qdamp=0.05, qbroad=0.01, biso=0.4, catalogue_size=10_000, seed=0,
    )  # fmt: skip
    data = steps.load_fit_data(GR, settings)
    s = data.settings
    model = steps.load_model(s)
    masks = steps.make_catalogue(model, s)
    fits = steps.fit_masks(steps.prepare_engine(model, s, data.r), masks, data.g, s.zoom)
    trained = steps.train_surrogate(masks, fits.rwp, s)
    points = sorted(trained.search_history, key=lambda h: h.get("cv_mae", np.inf))
    params = [Hyperparameters.from_dict(h) for h in points]
    members = [(p.to_xgb_params(seed=s.seed), p.n_estimators)
               for p in (params[b % len(params)] for b in range(s.ci_models))]  # fmt: skip

    def call(workers: int) -> np.ndarray:
        return ensemble_contributions(fits.rwp, masks, members, s.seed, s.ci_rows, workers)

    ref = call(1).tobytes()
    call(2)  # numba's serial kernel from its cache
    print(f"\ninterval ensemble ({s.ci_models} members of {s.ci_rows:,} motifs, trees "
          f"{[n for _, n in members]}), {load()}")  # fmt: skip
    wall: dict[int, list[float]] = {1: [], 2: []}
    cpu: dict[int, list[float]] = {1: [], 2: []}
    same = True
    for _ in range(args.ensemble):
        for workers in (1, 2):
            t, c = time.perf_counter(), time.process_time()
            same &= call(workers).tobytes() == ref
            wall[workers].append(time.perf_counter() - t)
            cpu[workers].append(time.process_time() - c)
        print(f"  {load()}")
    for workers, name in ((1, "one at a time (before)"), (2, "two at a time")):
        w, c = wall[workers], np.median(cpu[workers])
        print(f"  {name:24s} wall best {min(w):.3f} s, median {np.median(w):.3f} s; "
              f"CPU median {c:.3f} s")  # fmt: skip
    ratio_med = np.median(wall[2]) / np.median(wall[1])
    print(f"  two / one at a time: wall best {min(wall[2]) / min(wall[1]):.2f}, median "
          f"{ratio_med:.2f}; byte-identical: {same}; {load()}")  # fmt: skip


# ------------------------------------------------------------------ analyze


#: report.json timings shown per run: where the user waits (s)
PHASES = (
    "startup",
    "prepare_engine",
    "fit",
    "train_search",
    "train_fit",
    "explain",
    "intervals",
    "confirm",
    "refine",
    "outputs",
    "wall_to_answer",
    "plots",
    "wall",
)


def run_analyze(
    pythonpath: Path, out: Path, catalogue: int
) -> tuple[float, float, dict[str, float], str]:
    """(measured wall s, printed total s, report.json timings, stdout) of the README command."""
    cmd = [sys.executable, "-c", CLI, "analyze", str(GR), "--model", str(MODEL),
           "--permute", "W", "--threshold", "2.5", *PDF_FLAGS, "--catalogue", str(catalogue),
           "--seed", "0", "--out", str(out)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    t = time.perf_counter()
    proc = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env, cwd=out.parent)
    wall = time.perf_counter() - t
    printed = float(re.search(r"total ([0-9.]+) s", proc.stdout).group(1))  # type: ignore[union-attr]
    timings = json.loads((out / "report.json").read_text()).get("timings", {})
    return wall, printed, timings, proc.stdout


def git_tree(ref: str, where: Path) -> Path:
    """A ``git archive`` of ``ref`` unpacked into ``where`` (run with the same interpreter)."""
    where.mkdir()
    blob = subprocess.run(["git", "-C", str(ROOT), "archive", ref],
                          check=True, capture_output=True).stdout  # fmt: skip
    with tarfile.open(fileobj=BytesIO(blob)) as tar:
        tar.extractall(where, filter="data")
    return where


def bench_analyze(args: argparse.Namespace, tmp: Path) -> None:
    if args.baseline_tree:
        base_tree, base_name = Path(args.baseline_tree), f"before ({args.baseline_tree})"
    else:
        base_tree = git_tree(args.baseline_ref, tmp / "baseline")
        base_name = f"before ({args.baseline_ref})"
    after_tree, after_name = ROOT, "this tree"
    if args.after_ref:  # e.g. one commit against its parent, without others' edits in ROOT
        after_tree, after_name = (
            git_tree(args.after_ref, tmp / "after"),
            f"after ({args.after_ref})",
        )
    rows = []
    trees = ((base_name, base_tree), (after_name, after_tree))
    for _ in range(args.analyze_repeats):  # alternate, so both see the same neighbours
        for name, tree in trees:
            out = tmp / f"analyze-{len(rows)}"
            ld = load()
            wall, printed, timings, _ = run_analyze(tree, out, args.analyze)
            rows.append(
                (name, wall, printed, ld, timings, (out / "contributions.csv").read_bytes())
            )
    print(f"\n`motex-stream analyze` (README command, --catalogue {args.analyze:,}), subprocess")
    print(f"{'':30s} {'wall s':>7s} {'printed total s':>16s} {'wall - printed':>15s}  load")
    for name, wall, printed, ld, _, _ in rows:
        print(f"{name:30s} {wall:7.1f} {printed:16.1f} {wall - printed:15.1f}  {ld}")
    print("\nreport.json timings (s), per run:")
    print(f"{'':30s} " + " ".join(f"{k[:10]:>10s}" for k in PHASES))
    for name, _, _, _, timings, _ in rows:
        print(f"{name:30s} " + " ".join(f"{timings.get(k, float('nan')):10.2f}" for k in PHASES))
    for name, _ in trees:
        med = {k: float(np.median([r[4].get(k, np.nan) for r in rows if r[0] == name]))
               for k in PHASES}  # fmt: skip
        print(f"{'median ' + name:30s} " + " ".join(f"{med[k]:10.2f}" for k in PHASES))
    best = {name: min(r[1] for r in rows if r[0] == name) for name, _ in trees}
    med_wall = {name: float(np.median([r[1] for r in rows if r[0] == name])) for name, _ in trees}
    med_answer = {
        name: float(np.median([r[4].get("wall_to_answer", np.nan) for r in rows if r[0] == name]))
        for name, _ in trees
    }
    (before, after) = (best[name] for name, _ in trees)
    (mb, ma) = (med_wall[name] for name, _ in trees)
    (ab, aa) = (med_answer[name] for name, _ in trees)
    same = all(r[5] == rows[0][5] for r in rows)
    print(f"wall this tree / before: best {after / before:.2f}, median {ma / mb:.2f}; "
          f"wall to the answer, median: {aa:.1f} / {ab:.1f} s = {aa / ab:.2f}")  # fmt: skip
    print(f"contributions.csv byte-identical in every run: {same}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--m1", type=int, default=10_000)
    ap.add_argument("--m2", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--analyze", type=int, default=10_000, help="catalogue; 0: skip analyze")
    ap.add_argument("--baseline-ref", default="6db11bb", help="git ref of the 'before' tree")
    ap.add_argument(
        "--baseline-tree", default=None, help="a checked-out 'before' tree (e.g. a git worktree)"
    )
    ap.add_argument("--analyze-repeats", type=int, default=1)
    ap.add_argument("--skip-fit", action="store_true")
    ap.add_argument(
        "--cmd-baseline-ref", default=None, help="also time `fit` of this git ref, alternated"
    )
    ap.add_argument("--skip-before", action="store_true", help="no csv-module baseline row")
    ap.add_argument("--large", action="store_true", help="also Ga2O3 2x2x2 (80 Ga) `fit`")
    ap.add_argument(
        "--ensemble", type=int, default=0, help="interval members 1 vs 2 at a time, N calls each"
    )
    ap.add_argument(
        "--after-ref", default=None, help="analyze 'this tree' from a git ref instead of ROOT"
    )
    args = ap.parse_args()
    print(f"{os.cpu_count()} CPUs; {load()}")
    with tempfile.TemporaryDirectory() as d:
        if not args.skip_fit:
            bench_fit(args, Path(d))
        if args.large:
            bench_large(args, Path(d))
        if args.ensemble:
            bench_ensemble(args)
        if args.analyze:
            bench_analyze(args, Path(d))


if __name__ == "__main__":
    main()
