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
    best: dict[tuple[str, int], float] = {}
    print(f"fit, in process, {load()}")
    for _ in range(args.repeats):  # alternate, so every way sees the same neighbours
        for name, fn in ways.items():
            for m in (args.m1, args.m2):
                time.sleep(0.3)
                t = time.perf_counter()
                fn(m)
                dt = time.perf_counter() - t
                best[name, m] = min(best.get((name, m), np.inf), dt)
    rates = {
        name: (args.m2 - args.m1) / (best[name, args.m2] - best[name, args.m1]) for name in ways
    }
    base = rates["CSV in/out, csv module (before)"]
    eng = rates["engine alone (masks in memory)"]
    print(f"{'':34s} {'t(M1) s':>8s} {'t(M2) s':>8s} {'marginal fits/s':>16s} "
          f"{'vs before':>10s} {'vs engine':>10s}")  # fmt: skip
    for name in ways:
        r = rates[name]
        print(f"{name:34s} {best[name, args.m1]:8.2f} {best[name, args.m2]:8.2f} "
              f"{r:16,.0f} {r / base:9.2f}× {r / eng:9.2f}×")  # fmt: skip
    print(f"(M1 = {args.m1:,}, M2 = {args.m2:,} masks; best of {args.repeats}; {load()})")

    # the command itself, as the user runs it
    print(f"\n`motex-stream fit` command (subprocess), {load()}")
    cmd = [sys.executable, "-c", CLI, "fit", str(GR), "--model", str(MODEL),
           *PDF_FLAGS]  # fmt: skip
    subprocess.run(
        [*cmd, "--masks", str(files[args.m1]), "--out", str(tmp / "cmd.csv")],
        check=True,
        capture_output=True,
    )  # fmt: skip  (warm: numba cache, page cache)
    for ext in ("csv", "npz"):
        walls: dict[int, float] = {}
        for _ in range(args.repeats):
            for m in (args.m1, args.m2):
                t = time.perf_counter()
                subprocess.run([*cmd, "--masks", str(tmp / f"masks{m}.{ext}"), "--out",
                                str(tmp / "cmd.csv")], check=True, capture_output=True)  # fmt: skip
                walls[m] = min(walls.get(m, np.inf), time.perf_counter() - t)
        rate = (args.m2 - args.m1) / (walls[args.m2] - walls[args.m1])
        print(f"  {ext} in: wall {walls[args.m1]:.2f} s ({args.m1:,}), {walls[args.m2]:.2f} s "
              f"({args.m2:,}): marginal {rate:,.0f} fits/s ({rate / eng:.2f}× the engine's "
              f"in-process rate above); {load()}")  # fmt: skip


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


def bench_analyze(args: argparse.Namespace, tmp: Path) -> None:
    if args.baseline_tree:
        base_tree, base_name = Path(args.baseline_tree), f"before ({args.baseline_tree})"
    else:
        base_tree, base_name = tmp / "baseline", f"before ({args.baseline_ref})"
        base_tree.mkdir()
        blob = subprocess.run(["git", "-C", str(ROOT), "archive", args.baseline_ref],
                              check=True, capture_output=True).stdout  # fmt: skip
        with tarfile.open(fileobj=BytesIO(blob)) as tar:
            tar.extractall(base_tree, filter="data")
    rows = []
    trees = ((base_name, base_tree), ("this tree", ROOT))
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
    args = ap.parse_args()
    print(f"{os.cpu_count()} CPUs; {load()}")
    with tempfile.TemporaryDirectory() as d:
        if not args.skip_fit:
            bench_fit(args, Path(d))
        if args.analyze:
            bench_analyze(args, Path(d))


if __name__ == "__main__":
    main()
