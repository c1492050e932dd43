"""Issue 23: start-up and wall time of the `motex-stream fit` command, this tree vs a baseline.

The baseline is another revision's package (``git archive REV motex_stream``) run by the same
interpreter from a temporary folder; the two are run alternately, ``--repeats`` times each, so
a neighbour's load hits both alike, and the best wall of each is reported with their ratio.
Each run is the command as a user types it (a fresh process: interpreter, imports, argument
parsing, preparation, fits, output) on ``--masks`` masks of 109725.xyz against the DanMAX
data; ``-X importtime`` gives the import time and whether xgboost, shap, scikit-optimize or
matplotlib were imported. The two outputs must be byte-identical.

Usage: python benchmarks/bench_fit_startup.py --baseline REV [--masks 1000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "motex_stream" / "data" / "keggin"
CLI = "import sys; from motex_stream.cli import main; sys.exit(main())"
FLAGS = ["--rmin", "1.6", "--rmax", "10", "--qdamp", "0.05", "--qbroad", "0.01"]
FLAGS += ["--biso", "0.4", "--model", str(DATA / "109725.xyz")]
HEAVY = ("xgboost", "shap", "skopt", "matplotlib")
_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \| (\s*)(\S+)")


def run(tree: Path, masks: Path, out: Path) -> tuple[float, float, list[str]]:
    """(wall s, import s, heavy packages imported) of one ``fit`` command from ``tree``."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    cmd = [
        sys.executable,
        "-X",
        "importtime",
        "-c",
        CLI,
        "fit",
        str(DATA / "DanMAX_AlphaKeggin.gr"),
    ]
    t = time.perf_counter()
    done = subprocess.run(
        [*cmd, *FLAGS, "--masks", str(masks), "--out", str(out)],
        env=env,
        cwd=out.parent,  # not the repository: `-c` puts the working folder first on sys.path
        capture_output=True,
        text=True,
        check=True,
    )
    wall = time.perf_counter() - t
    imported_s, heavy = 0.0, []
    for line in done.stderr.splitlines():
        m = _LINE.match(line)
        if m is None:
            continue
        if m.group(3) == "":  # a top-level import: its cumulative time counts once
            imported_s += int(m.group(2)) / 1e6
        if m.group(4) in HEAVY:
            heavy.append(m.group(4))
    return wall, imported_s, sorted(set(heavy))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", required=True, help="git revision of the baseline package")
    ap.add_argument("--masks", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    from motex_stream.catalogue import random_catalogue

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        base = tmp / "baseline"
        base.mkdir()
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", args.baseline, "motex_stream"],
            capture_output=True,
            check=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(base)], input=archive, check=True)
        masks = tmp / "masks.npy"
        np.save(masks, random_catalogue(24, args.masks, 3, 3, 21).astype(np.uint8))
        trees = {f"baseline {args.baseline}": base, "this tree": ROOT}
        for name, tree in trees.items():  # warm: numba cache, page cache
            run(tree, masks, tmp / f"{name}.csv")
        walls: dict[str, list[float]] = {n: [] for n in trees}
        imports: dict[str, list[float]] = {n: [] for n in trees}
        heavy: dict[str, list[str]] = {}
        for _ in range(args.repeats):
            for name, tree in trees.items():
                wall, imp, heavy[name] = run(tree, masks, tmp / f"{name}.csv")
                walls[name].append(wall)
                imports[name].append(imp)
        outputs = [(tmp / f"{n}.csv").read_bytes() for n in trees]
        load = "load {:.1f} {:.1f} {:.1f}".format(*os.getloadavg())
    base_wall = min(walls[f"baseline {args.baseline}"])
    base_imp = min(imports[f"baseline {args.baseline}"])
    print(f"`motex-stream fit`, {args.masks:,} masks (.npy), best of {args.repeats}, {load}")
    print(f"{'package':28s} {'wall s':>7s} {'imports s':>10s} {'wall ratio':>11s} "
          f"{'imports ratio':>14s}  heavy imports")  # fmt: skip
    for name in trees:
        w, i = min(walls[name]), min(imports[name])
        print(f"{name:28s} {w:7.2f} {i:10.2f} {w / base_wall:10.2f}× {i / base_imp:13.2f}×  "
              f"{', '.join(heavy[name]) or 'none'}")  # fmt: skip
    print("outputs byte-identical:", outputs[0] == outputs[1])


if __name__ == "__main__":
    main()
