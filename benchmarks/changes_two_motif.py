"""Change detection on the two-motif series, through the real live analyzer, over noise seeds.

For each seed: a series crossing from motif A (an α-Keggin W12O40 unit, atoms 1-12) to motif
B (a W13 cluster, atoms 13-25) with a logistic step centred between two frames, and a
stationary series of pure A with the same noise; optionally the slow linear ramp the demo
uses. Every frame goes through ``MotexFrameAnalyzer.analyze`` (what the service calls),
starting from a copy of one prepared state. Prints, per series and seed, the changes
reported (frame dated, frame of the message that reported it, atoms gained/lost), the
distance of the dated frame from the crossover, and the false alarms.
Usage: python benchmarks/changes_two_motif.py [--seeds 5] [--noise 0.01] [--ramp]
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

from motex_stream.analysis.settings import LiveModelSettings
from motex_stream.stream.frames import Frame
from motex_stream.stream.live.analyzer import MotexFrameAnalyzer
from motex_stream.stream.sim.series import TwoMotifSeries, two_motif_series

log = logging.getLogger("changes_two_motif")

N_CROSS, CROSSOVER, N_STATIONARY = 30, 14.5, 100


def changes(series: TwoMotifSeries, settings: LiveModelSettings, state: Path, work: Path):  # type: ignore[no-untyped-def]
    """(seq reported, change) for each change the analyzer reports on the series."""
    copy = work / f"state-{time.monotonic_ns()}"
    shutil.copytree(state, copy)
    analyzer = MotexFrameAnalyzer.prepare(settings, None, copy)
    out = []
    for i in range(series.n_frames):
        result = analyzer.analyze(Frame("run", i + 1, float(i), series.r, series.frame(i)))
        if result.change is not None:
            out.append((i + 1, result.change))
    return out


def describe(found) -> str:  # type: ignore[no-untyped-def]
    return (
        "; ".join(
            f"frame {c.frame} (reported {seq}): +{len(c.atoms_gained)} "
            f"-{len(c.atoms_lost)} conf {c.confidence:.3f}"
            for seq, c in found
        )
        or "none"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--noise", type=float, default=0.01, help="σ of the noise / max |G|")
    ap.add_argument("--catalogue", type=int, default=2000)
    ap.add_argument("--ramp", action="store_true", help="also the demo's linear ramp")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        first = two_motif_series(
            work / "s", n_frames=N_CROSS, noise=args.noise, crossover=CROSSOVER
        )
        settings = LiveModelSettings(
            name="two-motifs",
            starting_model=str(first.model_path),
            catalogue_size=args.catalogue,
            refit=args.catalogue,
            rounds=10,
            max_trees=150,
            search_calls=6,
        )
        state = work / "state"
        MotexFrameAnalyzer.prepare(settings, Frame("ref", 1, 0.0, first.r, first.frame(0)), state)
        print(
            f"two-motif series, catalogue {args.catalogue}, noise {args.noise} x max|G|, "
            f"change_frames {settings.change_frames}, ci_models {settings.ci_models}, "
            f"crossover between seq {int(CROSSOVER + 1)} and {int(CROSSOVER + 2)}"
        )
        print(
            f"{'series':<22s} {'seed':>4s} {'changes':>7s} {'|frame - crossover|':>19s}  reported"
        )
        offsets, alarms = [], 0
        for seed in range(args.seeds):
            cross = two_motif_series(
                work / "s", n_frames=N_CROSS, noise=args.noise, seed=seed, crossover=CROSSOVER
            )
            found = changes(cross, settings, state, work)
            off = [abs(c.frame - (CROSSOVER + 1)) for _, c in found]
            offsets += off
            print(
                f"{'crossover (30 frames)':<22s} {seed:4d} {len(found):7d} "
                f"{', '.join(f'{o:.1f}' for o in off) or '—':>19s}  {describe(found)}"
            )
            still = two_motif_series(
                work / "s", n_frames=N_STATIONARY, noise=args.noise, seed=100 + seed, hold=0.0
            )
            found = changes(still, settings, state, work)
            alarms += len(found)
            print(f"{'stationary (100)':<22s} {100 + seed:4d} {len(found):7d} {'—':>19s}  ", end="")
            print(describe(found))
            if args.ramp:
                ramp = two_motif_series(work / "s", n_frames=N_CROSS, noise=args.noise, seed=seed)
                found = changes(ramp, settings, state, work)
                print(f"{'linear ramp (30)':<22s} {seed:4d} {len(found):7d} {'—':>19s}  ", end="")
                print(describe(found))
    load = os.getloadavg()
    print(
        f"crossover: {len(offsets)} changes over {args.seeds} series, |dated - crossover| max "
        f"{max(offsets) if offsets else float('nan'):.1f} frames; stationary: {alarms} false "
        f"alarms in {args.seeds * N_STATIONARY} frames ({time.perf_counter() - t0:.0f} s, "
        f"load {load[0]:.1f})"
    )


if __name__ == "__main__":
    main()
