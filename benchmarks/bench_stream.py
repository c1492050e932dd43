"""Per-frame latency of the live service (frame received → message published), 109725.xyz.

10,000-motif catalogue, 10,000 motifs refitted per frame, frames arriving at a fixed rate.
Baseline in the same run: a from-scratch per-frame analysis (fit all + search + train +
SHAP) on a few frames. Writes latency and GBDT error vs frame to a PNG.
Usage: python benchmarks/bench_stream.py [--frames 200] [--rate 2] [--out bench-stream.png]

``--sweep`` instead runs, with one prepared analyzer in one process, the input rates and
refit counts of the acceptance table (2 frames/s × 10,000 refits, 5 × 10,000, 10 × 2,000;
policy ``all``, so nothing may be skipped) and prints rate against latency.

``--intervals`` instead measures what the live confidence intervals cost: the same stream
(same frames, same rate, each row starting from a copy of the same prepared state) with the
intervals from the SHAP-mean sampling error alone (``ci_models = 0``: the baseline, a few
vector operations, and no confirming pass: the baseline), with the rotating surrogate
ensemble (``ci_models`` members, one refreshed per frame), and with the ensemble plus the
confirming pass of the keep labels (``confirm_contexts``, the default). Printed: latency
p50/p99/max, the median analysis time per frame (sum of the stages), the median
``intervals`` and ``confirm`` stages, and the ratio of the per-frame analysis time to the
baseline's. The rows alternate (baseline, ensemble, ensemble + confirm, twice) so a change in
the machine's load hits all.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from motex_stream.analysis.settings import LiveModelSettings
from motex_stream.fitting.grfile import read_gr
from motex_stream.stream.frames import Frame
from motex_stream.stream.live.analyzer import MotexFrameAnalyzer
from motex_stream.stream.live.runs import LiveRuns
from motex_stream.stream.publishers.jsonl import JsonlSink, read_jsonl
from motex_stream.stream.service import StreamService
from motex_stream.stream.sim.plots import latency_error_plot
from motex_stream.stream.sources.memory_source import SeriesSource

DATA = Path(__file__).resolve().parents[1] / "motex_stream" / "data" / "keggin"


def drifting_frames(r: np.ndarray, g: np.ndarray, n: int):
    """DanMAX G slowly rescaled in r (a 0.5 % lattice breathing) plus seeded noise."""

    def frame(i: int) -> np.ndarray:
        z = 1 + 0.005 * np.sin(2 * np.pi * i / max(n, 1))
        rng = np.random.default_rng(i)
        return np.interp(r * z, r, g) + 0.01 * np.abs(g).max() * rng.standard_normal(g.size)

    return frame


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--rate", type=float, default=2.0, help="input frames per second")
    ap.add_argument("--catalogue", type=int, default=10_000)
    ap.add_argument("--refit", type=int, default=10_000)
    ap.add_argument("--baseline-frames", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("bench-stream.png"))
    ap.add_argument("--sweep", action="store_true", help="rate × refit table (see doc)")
    ap.add_argument("--intervals", action="store_true", help="cost of the live intervals (see doc)")
    ap.add_argument("--ci-models", type=int, default=4, help="ensemble members (--intervals)")
    ap.add_argument(
        "--max-trees",
        type=int,
        default=LiveModelSettings.model_fields["max_trees"].default,
        help="tree cap of the live GBDT (how often a frame is rebuilt in line)",
    )
    args = ap.parse_args()

    data = read_gr(DATA / "DanMAX_AlphaKeggin.gr")
    keep = (data.r >= 0.5) & (data.r <= 15)
    r, g = data.r[keep], data.g[keep]
    frame = drifting_frames(r, g, args.frames)
    settings = LiveModelSettings(
        name="keggin-109725",
        starting_model=str(DATA / "109725.xyz"),
        catalogue_size=args.catalogue,
        refit=args.refit,
        rounds=10,
        max_trees=args.max_trees,
    )
    if args.intervals:
        interval_cost(settings, frame, r, args.frames, args.rate, args.ci_models)
        return
    t = time.perf_counter()
    analyzer = MotexFrameAnalyzer.prepare(settings, reference=Frame("ref", 1, 0.0, r, frame(0)))
    t_prepare = time.perf_counter() - t
    analyzer.analyze(Frame("warm", 1, 0.0, r, frame(0)))  # warm caches before timing
    if args.sweep:
        sweep(analyzer, settings, frame, r, args.frames)
        return

    with tempfile.TemporaryDirectory() as tmp:
        results = Path(tmp) / "results.jsonl"
        source = SeriesSource(frame, r, args.frames, interval=1.0 / args.rate)
        service = StreamService({settings.name: analyzer}, [source], [JsonlSink(results)])
        t = time.perf_counter()
        summary = service.run(threading.Event())
        wall = time.perf_counter() - t
        messages = list(read_jsonl(results))

    lat = np.array([m["published_at"] - m["received_at"] for m in messages])
    mae = np.array([m["model_quality"]["mae"] for m in messages])
    stages = {
        k: np.median([m["timing"].get(k, 0.0) for m in messages]) for k in messages[0]["timing"]
    }

    t = time.perf_counter()
    for i in range(args.baseline_frames):
        analyzer.from_scratch(Frame("base", i + 1, 0.0, r, frame(i)))
    base = (time.perf_counter() - t) / args.baseline_frames

    half = len(lat) // 2
    print(
        f"live service, 109725.xyz, catalogue {args.catalogue}, refit {args.refit}/frame, "
        f"input {args.rate} frames/s, {len(messages)} frames (prepare: {t_prepare:.1f} s)"
    )
    print(f"{'':34s} {'p50 s':>7s} {'p99 s':>7s} {'max s':>7s}")
    print(
        f"{'latency (received → published)':34s} {np.median(lat):7.3f} "
        f"{np.percentile(lat, 99):7.3f} {lat.max():7.3f}"
    )
    print("median per stage: " + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in stages.items()))
    # rebuilt frames train, explain and build the interval ensemble in line (issue 20), so
    # their cost is reported apart from the warm-start frames'
    rebuilt = np.array([bool(m["model_quality"]["rebuilt"]) for m in messages])
    work = np.array([sum(v for k, v in m["timing"].items() if k != "total") for m in messages])
    for label, which in (("warm-start frames", ~rebuilt), ("rebuilt frames", rebuilt)):
        if which.any():
            print(
                f"{label + f' ({int(which.sum())})':34s} latency p50 {np.median(lat[which]):.3f} "
                f"p99 {np.percentile(lat[which], 99):.3f} s; analysis p50 "
                f"{np.median(work[which]):.3f} p99 {np.percentile(work[which], 99):.3f} s"
            )
    print(f"rebuilt at frames {[m['seq'] for m, b in zip(messages, rebuilt, strict=True) if b]}")
    if rebuilt.any():
        built = [m["timing"] for m, b in zip(messages, rebuilt, strict=True) if b]
        print(
            "median per stage, rebuilt frames: "
            + ", ".join(
                f"{k} {1000 * np.median([t.get(k, 0.0) for t in built]):.0f} ms" for k in built[0]
            )
        )
    load = os.getloadavg()
    print(f"load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}")
    print(
        f"sustained: {len(messages) / wall:.2f} frames/s processed "
        f"(skipped {summary['skipped']}, failed {summary['failed']})"
    )
    print(
        f"drift check: latency p50 first half {np.median(lat[:half]):.3f} s, second half "
        f"{np.median(lat[half:]):.3f} s; MAE median first half {np.median(mae[:half]):.4f}, "
        f"second half {np.median(mae[half:]):.4f}"
    )
    print(
        f"baseline, same run: from-scratch per-frame analysis {base:.2f} s/frame "
        f"→ warm-started service is {base / np.median(lat):.0f}× faster per frame"
    )
    latency_error_plot(lat, mae, args.out, "109725 live: latency and GBDT MAE vs frame")
    print(f"plot: {args.out}")


def run_service(analyzer, frame, r, n: int, rate: float):  # type: ignore[no-untyped-def]
    """Play ``n`` frames at ``rate`` through a service; (messages, summary, wall seconds)."""
    with tempfile.TemporaryDirectory() as tmp:
        results = Path(tmp) / "results.jsonl"
        source = SeriesSource(frame, r, n, interval=1.0 / rate)
        service = StreamService({analyzer.name: analyzer}, [source], [JsonlSink(results)])
        t = time.perf_counter()
        summary = service.run(threading.Event())
        wall = time.perf_counter() - t
        return list(read_jsonl(results)), summary, wall


def interval_cost(settings, frame, r, n: int, rate: float, members: int) -> None:  # type: ignore[no-untyped-def]
    """The ``--intervals`` table (see the module doc)."""
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "state"
        t = time.perf_counter()
        MotexFrameAnalyzer.prepare(settings, Frame("ref", 1, 0.0, r, frame(0)), state)
        t_prepare = time.perf_counter() - t
        contexts = settings.confirm_contexts
        configs = [
            ("sampling error only", 0, 0),
            (f"+ rotating ensemble ({members})", members, 0),
            (f"+ ensemble + confirm ({contexts})", members, contexts),
        ] * 2
        rows: list[tuple[str, np.ndarray, float, float, float, float, int]] = []
        for k, (name, n_models, n_contexts) in enumerate(configs):
            copy = Path(tmp) / f"state-{k}"
            shutil.copytree(state, copy)
            cfg = settings.updated(ci_models=n_models, confirm_contexts=n_contexts)
            analyzer = MotexFrameAnalyzer.prepare(cfg, None, copy)
            analyzer.analyze(Frame("warm", 1, 0.0, r, frame(0)))  # compiled kernels, members
            messages, summary, _ = run_service(analyzer, frame, r, n, rate)
            lat = np.array([m["published_at"] - m["received_at"] for m in messages])
            compute = np.array(
                [sum(v for s, v in m["timing"].items() if s != "total") for m in messages]
            )
            ci = np.array([m["timing"].get("intervals", 0.0) for m in messages])
            confirm = np.array([m["timing"].get("confirm", 0.0) for m in messages])
            rows.append(
                (name, lat, float(np.median(compute)), float(np.median(ci)),
                 float(np.median(confirm)), float(np.median((ci + confirm) / compute)),
                 summary["skipped"])
            )  # fmt: skip
    base = np.median([row[2] for row in rows if row[0] == configs[0][0]])
    load = os.getloadavg()
    print(
        f"live intervals, 109725.xyz, catalogue {settings.catalogue_size}, refit "
        f"{settings.refit}/frame, input {rate} frames/s, {n} frames per row "
        f"(prepare {t_prepare:.1f} s; load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f})"
    )
    print(
        f"{'intervals':34s} {'p50 s':>7s} {'p99 s':>7s} {'max s':>7s} {'frame ms':>9s} "
        f"{'interval ms':>11s} {'confirm ms':>10s} {'share':>6s} {'ratio':>6s} {'skip':>5s}"
    )
    for name, lat, compute, ci, confirm, share, skipped in rows:
        print(
            f"{name:34s} {np.median(lat):7.3f} {np.percentile(lat, 99):7.3f} {lat.max():7.3f} "
            f"{compute * 1000:9.1f} {ci * 1000:11.2f} {confirm * 1000:10.2f} {share:6.1%} "
            f"{compute / base:6.2f} {skipped:5d}"
        )
    print("frame ms: median analysis time per frame (sum of stages); share: median (interval")
    print("+ confirm) stages / frame; ratio: frame ms / the baseline rows' median")
    print(f"({base * 1000:.1f} ms)")


def sweep(analyzer, settings, frame, r, n: int) -> None:  # type: ignore[no-untyped-def]
    configs = [(2.0, 10_000), (5.0, 10_000), (10.0, 2_000)]
    print(f"live service, 109725.xyz, catalogue {settings.catalogue_size}, {n} frames per row")
    print(
        f"{'in fr/s':>7s} {'refit':>6s} {'p50 s':>7s} {'p99 s':>7s} {'max s':>7s} "
        f"{'out fr/s':>8s} {'skip':>5s} {'fail':>5s}  median stages (ms)"
    )
    for rate, refit in configs:
        analyzer.settings = settings.model_copy(update={"refit": refit})
        analyzer._runs = LiveRuns()  # forget the runs' settings: the new ones apply
        messages, summary, wall = run_service(analyzer, frame, r, n, rate)
        lat = np.array([m["published_at"] - m["received_at"] for m in messages])
        stages = {
            k: np.median([m["timing"].get(k, 0.0) for m in messages]) for k in messages[0]["timing"]
        }
        worst = {k: max(m["timing"].get(k, 0.0) for m in messages) for k in stages}
        rebuilds = sum(bool(m["model_quality"].get("rebuilt")) for m in messages)
        print(
            f"{rate:7.1f} {refit:6d} {np.median(lat):7.3f} {np.percentile(lat, 99):7.3f} "
            f"{lat.max():7.3f} {len(messages) / wall:8.2f} {summary['skipped']:5d} "
            f"{summary['failed']:5d}  "
            + ", ".join(f"{k} {v * 1000:.0f}" for k, v in stages.items() if k != "regrid")
        )
        print(
            f"{'':49s}max stages (ms): "
            + ", ".join(f"{k} {v * 1000:.0f}" for k, v in worst.items() if k != "regrid")
            + f"; {rebuilds} rebuild swaps"
        )


if __name__ == "__main__":
    main()
