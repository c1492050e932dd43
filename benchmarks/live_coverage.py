"""Coverage of the live intervals against repeated live analyses (different seeds).

109725.xyz on the DanMAX α-Keggin data with seeded noise (the frames of bench_stream.py).
For each seed: a fresh preparation (catalogue, fits, search, surrogate: everything the seed
moves), then ``--frames`` frames through ``MotexFrameAnalyzer.analyze``, once with the
intervals from the SHAP-mean sampling error alone (``ci_models = 0``) and once with the
rotating ensemble (the default ``ci_models``), from copies of the same prepared state. For
every frame and atom, an interval *covers* when it contains the mean value of the other
seeds on that frame (leave-one-out, as the offline check in results.md). Also printed: the
median half-width against the median between-seed SD, and the labels, with the wrong ones:
``keep`` outside the α-Keggin unit (the even W) and ``remove`` inside it (W1, W3, …, W23).
Usage: python benchmarks/live_coverage.py [--seeds 6] [--frames 20] [--catalogue 2000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_stream import DATA, drifting_frames

from motex_stream.analysis.settings import LiveModelSettings
from motex_stream.fitting.grfile import read_gr
from motex_stream.stream.frames import Frame
from motex_stream.stream.live.analyzer import MotexFrameAnalyzer


def run(settings: LiveModelSettings, state: Path, copy: Path, frame, r, n: int):  # type: ignore[no-untyped-def]
    """(values, low, high, labels, interval seconds) over ``n`` frames, each (n, atoms)."""
    shutil.copytree(state, copy)
    analyzer = MotexFrameAnalyzer.prepare(settings, None, copy)
    rows = []
    for i in range(n):
        res = analyzer.analyze(Frame("run", i + 1, float(i), r, frame(i)))
        atoms = res.contributions
        assert atoms.interval is not None and atoms.label is not None
        rows.append([atoms.value, *atoms.interval, list(atoms.label), res.timing["intervals"]])
    v, lo, hi = (np.array([row[k] for row in rows], dtype=float) for k in range(3))
    return v, lo, hi, np.array([row[3] for row in rows]), float(np.median([r[4] for r in rows]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=6)
    ap.add_argument("--frames", type=int, default=20)
    ap.add_argument("--catalogue", type=int, default=2000)
    args = ap.parse_args()
    data = read_gr(DATA / "DanMAX_AlphaKeggin.gr")
    keep = (data.r >= 0.5) & (data.r <= 15)
    r, g = data.r[keep], data.g[keep]
    frame = drifting_frames(r, g, args.frames)
    t0 = time.perf_counter()
    results: dict[str, list] = {"sampling error only": [], "+ rotating ensemble": []}
    members = 0
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            settings = LiveModelSettings(
                name=f"keggin-{seed}",
                starting_model=str(DATA / "109725.xyz"),
                catalogue_size=args.catalogue,
                refit=args.catalogue,
                rounds=10,
                max_trees=120,
                seed=seed,
            )
            members = settings.ci_models
            state = Path(tmp) / f"state-{seed}"
            MotexFrameAnalyzer.prepare(settings, Frame("ref", 1, 0.0, r, frame(0)), state)
            for name, cfg in (
                ("sampling error only", settings.updated(ci_models=0)),
                ("+ rotating ensemble", settings),
            ):
                copy = Path(tmp) / f"{name[:3]}-{seed}"
                results[name].append(run(cfg, state, copy, frame, r, args.frames))
    load = os.getloadavg()
    print(
        f"live intervals vs {args.seeds} seeds, 109725.xyz, DanMAX + 1 % noise, catalogue "
        f"{args.catalogue}, {args.frames} frames per seed, 90 % level, ensemble {members} "
        f"members ({time.perf_counter() - t0:.0f} s, load {load[0]:.1f})"
    )
    print(
        f"{'intervals':22s} {'coverage':>8s} {'worst atom':>10s} {'half-width':>10s} "
        f"{'seed SD':>8s} {'keep':>5s} {'uncert.':>7s} {'remove':>6s} {'wrong':>5s} "
        f"{'ms/frame':>8s}"
    )
    for name, runs in results.items():
        v = np.stack([x[0] for x in runs])  # seeds × frames × atoms
        lo, hi = np.stack([x[1] for x in runs]), np.stack([x[2] for x in runs])
        labels = np.stack([x[3] for x in runs])
        s = len(runs)
        others = (v.sum(axis=0, keepdims=True) - v) / (s - 1)
        covered = (lo <= others) & (others <= hi)
        per_atom = covered.mean(axis=(0, 1))
        half = np.median((hi - lo) / 2)
        sd = np.median(v.std(axis=0, ddof=1))
        counts = [
            float(np.mean((labels == k).sum(axis=2))) for k in ("keep", "uncertain", "remove")
        ]
        ms = 1000 * float(np.median([x[4] for x in runs]))
        inside = np.arange(labels.shape[2]) % 2 == 0  # W1, W3, … (0-based even)
        wrong = int(
            np.sum(labels[..., ~inside] == "keep") + np.sum(labels[..., inside] == "remove")
        )
        print(
            f"{name:22s} {covered.mean():8.1%} {per_atom.min():10.0%} {half:10.4f} {sd:8.4f} "
            f"{counts[0]:5.1f} {counts[1]:7.1f} {counts[2]:6.1f} {wrong:5d} {ms:8.1f}"
        )
    print("coverage: share of (seed, frame, atom) intervals holding the other seeds' mean value")
    print("keep/uncert./remove: mean count per frame (24 W); seed SD: median between-seed SD")
    print("wrong: labels over all seeds and frames that are keep outside / remove inside the unit")


if __name__ == "__main__":
    main()
