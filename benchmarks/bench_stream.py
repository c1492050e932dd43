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

``--fit-ahead`` instead measures the next frame's refit done beside the frame in progress
(``[service] fit_ahead``): the same stream (same frames, same rate, each row from a copy of the
same prepared state) with it off (the baseline) and on, alternated (``--repeats`` pairs).
Printed per row: frames per second sustained, latency p50/p99, the median analysis time of
the warm-start frames (sum of the stages; with the fit ahead the ``fit`` stage is the wait
for it), process CPU seconds per frame (all threads: the work the 2-core budget counts),
the rebuilt frames, what became of the fits started ahead, and the ratio of frames per second
to the baseline rows' median; and whether every row published the same messages (clocks and
timings aside).
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
        "--fit-ahead", action="store_true", help="next frame's refit beside this one (see doc)"
    )
    ap.add_argument("--repeats", type=int, default=2, help="off/on pairs (--fit-ahead)")
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
    if args.fit_ahead:
        fit_ahead_cost(settings, frame, r, args.frames, args.rate, args.repeats)
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


def run_service(analyzer, frame, r, n: int, rate: float, **service):  # type: ignore[no-untyped-def]
    """Play ``n`` frames at ``rate`` through a service (``service``: its keyword arguments);
    (messages, summary, wall seconds)."""
    with tempfile.TemporaryDirectory() as tmp:
        results = Path(tmp) / "results.jsonl"
        source = SeriesSource(frame, r, n, interval=1.0 / rate, uid="bench")
        service = StreamService(
            {analyzer.name: analyzer}, [source], [JsonlSink(results)], **service
        )
        t = time.perf_counter()
        summary = service.run(threading.Event())
        wall = time.perf_counter() - t
        return list(read_jsonl(results)), summary, wall


def _prepare_timed(settings, frame, r, tmp: Path) -> tuple[Path, float]:  # type: ignore[no-untyped-def]
    """A state prepared on frame 1 in ``tmp/state``, and the seconds the preparation took."""
    state = tmp / "state"
    t = time.perf_counter()
    MotexFrameAnalyzer.prepare(settings, Frame("ref", 1, 0.0, r, frame(0)), state)
    return state, time.perf_counter() - t


def interval_cost(settings, frame, r, n: int, rate: float, members: int) -> None:  # type: ignore[no-untyped-def]
    """The ``--intervals`` table (see the module doc)."""
    with tempfile.TemporaryDirectory() as tmp:
        state, t_prepare = _prepare_timed(settings, frame, r, Path(tmp))
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


#: message fields that differ between two runs of the same frames: clocks and timings
_CLOCKS = {"time", "received_at", "published_at", "timing", "latency_s", "age_s"}


def _published(messages: list[dict]) -> list[dict]:
    out = []
    for m in messages:
        m = {k: v for k, v in m.items() if k not in _CLOCKS}
        m["model_quality"] = {k: v for k, v in m["model_quality"].items() if k != "fits_per_s"}
        out.append(m)
    return out


def fit_ahead_cost(settings, frame, r, n: int, rate: float, repeats: int) -> None:  # type: ignore[no-untyped-def]
    """The ``--fit-ahead`` table (see the module doc)."""
    with tempfile.TemporaryDirectory() as tmp:
        state, t_prepare = _prepare_timed(settings, frame, r, Path(tmp))
        loads = [os.getloadavg()[0]]
        rows = []
        first: list[dict] | None = None
        identical = True
        for k, ahead in enumerate([False, True] * repeats):
            copy = Path(tmp) / f"state-{k}"
            shutil.copytree(state, copy)
            analyzer = MotexFrameAnalyzer.prepare(settings, None, copy)
            analyzer.analyze(Frame("warm", 1, 0.0, r, frame(0)))  # compiled kernels
            per_frame = _count_cpu(analyzer)
            cpu = time.process_time()
            messages, summary, wall = run_service(analyzer, frame, r, n, rate, fit_ahead=ahead)
            cpu = time.process_time() - cpu
            loads.append(os.getloadavg()[0])
            published = _published(messages)
            first = published if first is None else first
            identical &= published == first
            lat = np.array([m["published_at"] - m["received_at"] for m in messages])
            rebuilt = np.array([bool(m["model_quality"]["rebuilt"]) for m in messages])
            work = np.array(
                [sum(v for s, v in m["timing"].items() if s != "total") for m in messages]
            )
            fit = np.array([m["timing"]["fit"] for m in messages])
            c = analyzer.ahead.counts()
            frame_cpu = np.array(per_frame)
            rows.append(
                ("on" if ahead else "off", len(messages) / wall, lat,
                 float(np.median(work[~rebuilt])), float(np.median(fit[~rebuilt])),
                 cpu / max(len(messages), 1), int(rebuilt.sum()),
                 f"{c['used']}/{c['redone']}/{c['dropped']}/{c['failed']}",
                 summary["skipped"] + summary["failed"],
                 float(np.median(frame_cpu[~rebuilt])),
                 float(np.median(frame_cpu[rebuilt])) if rebuilt.any() else float("nan"))
            )  # fmt: skip
    base = float(np.median([row[1] for row in rows if row[0] == "off"]))
    print(
        f"next frame's refit beside this one, 109725.xyz, catalogue {settings.catalogue_size}, "
        f"refit {settings.refit}/frame, input {rate} frames/s, {n} frames per row "
        f"(prepare {t_prepare:.1f} s; load average before/after each row "
        f"{' '.join(f'{x:.1f}' for x in loads)})"
    )
    print(
        f"{'fit ahead':9s} {'fr/s':>6s} {'p50 s':>7s} {'p99 s':>7s} {'frame ms':>9s} "
        f"{'fit ms':>7s} {'CPU s/fr':>9s} {'warm':>6s} {'rebuilt':>7s} {'n':>3s} "
        f"{'ahead u/r/d/f':>14s} {'lost':>5s} {'ratio':>6s}"
    )
    for (
        name, rate_out, lat, frame_s, fit_s, cpu_s, n_rebuilt, ahead_counts, lost, warm_cpu,
        rebuilt_cpu,
    ) in rows:  # fmt: skip
        print(
            f"{name:9s} {rate_out:6.2f} {np.median(lat):7.3f} {np.percentile(lat, 99):7.3f} "
            f"{frame_s * 1000:9.1f} {fit_s * 1000:7.1f} {cpu_s:9.3f} {warm_cpu:6.3f} "
            f"{rebuilt_cpu:7.2f} {n_rebuilt:3d} {ahead_counts:>14s} {lost:5d} "
            f"{rate_out / base:6.2f}"
        )
    print("frame ms / fit ms: medians over warm-start frames (fit: the frame's wait for its")
    print("refit); CPU s/fr: process CPU (all threads) / frames; warm, rebuilt: median process")
    print("CPU s of a warm-start / rebuilt frame's analyze (with the fit ahead: of the next")
    print("frame's fit too); n: rebuilt frames; ahead u/r/d/f: fits made ahead used/redone/")
    print("dropped/failed; lost: skipped + failed; ratio: fr/s / off rows' median")
    print(f"({base:.2f}); every row published the same messages: {'yes' if identical else 'NO'}")
    off = [row for row in rows if row[0] == "off"]
    warm = float(np.median([row[9] for row in off]))
    rebuilt = [row[10] for row in off if np.isfinite(row[10])]
    if rebuilt:
        extra = float(np.median(rebuilt)) - warm
        per = n / max(1.0, float(np.median([row[6] for row in off])))
        budget = warm + max(0.0, extra) / per
        rebuilds = f"({extra:.2f} s more a rebuilt frame) / {per:.0f} frames"
    else:  # no rebuild fell in the rows (a high tree cap): the warm starts are the budget
        budget, rebuilds = warm, f"no rebuilt frame in {n}"
    print(
        f"CPU budget (off rows): {warm:.3f} core-s a warm-start frame + {rebuilds} = "
        f"{budget:.3f} core-s a frame: at most {2 / budget:.1f} frames/s on 2 cores, "
        f"{1 / budget:.1f} on one (10 frames/s needs 0.200)"
    )


def _count_cpu(analyzer) -> list[float]:  # type: ignore[no-untyped-def]
    """Process CPU seconds (all threads) of each ``analyze`` call from now on, in order."""
    spent: list[float] = []
    analyze = analyzer.analyze

    def counted(frame):  # type: ignore[no-untyped-def]
        t = time.process_time()
        try:
            return analyze(frame)
        finally:
            spent.append(time.process_time() - t)

    analyzer.analyze = counted
    return spent


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
