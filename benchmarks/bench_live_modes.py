"""What an exact live answer costs per frame: the live modes side by side (issue 20, issue 23).

The live analyzer can answer a frame three ways (``LiveModelSettings``):

- ``fast`` (the defaults: ``max_trees`` 400, ``rebuild_every`` 0): warm-start trees on the
  serving model; a rebuild only at the tree cap or on drift. Approximate between rebuilds.
- ``rescore`` (``rebuild_every`` 1): every frame is rebuilt, the serving search's best points
  scored again on the frame: ``analyze`` of the frame *given the live search*.
- ``exact`` (``rebuild_every`` 1, ``rebuild_search`` "search"): every frame is rebuilt with
  the frame's own search: ``analyze`` of the frame, bit for bit (tests/stream/test_live_parity).

README settings (109725, DanMAX data, 10,000 motifs, every motif refitted per frame); one
preparation, then each mode analyses the same ``--frames`` frames (a drifting DanMAX G, as
``bench_stream.py``) starting from its own copy of the prepared state, the modes alternating
frame by frame so the machine's load hits all of them alike. Printed per mode: the analysis
time per frame (sum of its stages) p50 / max, the frames per second that time sustains on
this machine, the median of each stage, and the ratio to the ``fast`` mode of the same run.

Usage: python benchmarks/bench_live_modes.py [--frames 6] [--catalogue 10000]
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_stream import DATA, drifting_frames  # benchmarks/ (this script's folder)

from motex_stream.analysis.settings import LiveModelSettings
from motex_stream.fitting.grfile import read_gr
from motex_stream.stream.frames import Frame
from motex_stream.stream.live.analyzer import MotexFrameAnalyzer

#: mode → the runtime settings that make it
MODES: dict[str, dict[str, object]] = {
    "fast": {},
    "rescore": {"rebuild_every": 1},
    "exact": {"rebuild_every": 1, "rebuild_search": "search"},
}


def load() -> str:
    return "load {:.1f} {:.1f} {:.1f}".format(*os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=6)
    ap.add_argument("--catalogue", type=int, default=10_000)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    data = read_gr(DATA / "DanMAX_AlphaKeggin.gr")
    keep = (data.r >= 0.5) & (data.r <= 15)
    r, g = data.r[keep], data.g[keep]
    frame = drifting_frames(r, g, args.frames + 1)
    settings = LiveModelSettings(
        name="keggin-109725",
        starting_model=str(DATA / "109725.xyz"),
        catalogue_size=args.catalogue,
    )
    print(f"{os.cpu_count()} CPUs; {load()}; catalogue {args.catalogue}, all refitted")
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared"
        t = time.perf_counter()
        MotexFrameAnalyzer.prepare(settings, Frame("ref", 1, 0.0, r, frame(0)), prepared)
        print(f"prepared in {time.perf_counter() - t:.1f} s; {load()}")
        analyzers = {}
        for mode, changes in MODES.items():
            shutil.copytree(prepared, Path(tmp) / mode)
            analyzers[mode] = MotexFrameAnalyzer.prepare(
                settings.updated(**changes), state_dir=Path(tmp) / mode
            )
        work: dict[str, list[float]] = {m: [] for m in MODES}
        stages: dict[str, list[dict[str, float]]] = {m: [] for m in MODES}
        rebuilt: dict[str, int] = dict.fromkeys(MODES, 0)
        for i in range(1, args.frames + 1):
            for mode, analyzer in analyzers.items():
                res = analyzer.analyze(Frame("run", i, float(i), r, frame(i)))
                timing = {k: v for k, v in res.timing.items() if k != "total"}
                work[mode].append(sum(timing.values()))
                stages[mode].append(timing)
                rebuilt[mode] += bool(res.model_quality.rebuilt)
            print(
                f"frame {i}: "
                + ", ".join(f"{m} {work[m][-1]:.2f} s" for m in MODES)
                + f"; {load()}"
            )

    base = float(np.median(work["fast"]))
    print(f"\n{'mode':<8s} {'rebuilt':>8s} {'p50 s':>7s} {'max s':>7s} {'frames/s':>9s} "
          f"{'× fast':>7s}  median stages (s)")  # fmt: skip
    for mode in MODES:
        w = np.array(work[mode])
        keys = sorted({k for s in stages[mode] for k in s})
        split = ", ".join(
            f"{k} {np.median([s.get(k, 0.0) for s in stages[mode]]):.2f}" for k in keys
        )
        print(f"{mode:<8s} {rebuilt[mode]:>5d}/{len(w):<2d} {np.median(w):7.2f} {w.max():7.2f} "
              f"{1 / np.median(w):9.2f} {np.median(w) / base:7.1f}  {split}")  # fmt: skip
    print(f"({args.frames} frames per mode, alternated; {load()})")


if __name__ == "__main__":
    main()
