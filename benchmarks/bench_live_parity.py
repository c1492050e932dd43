"""Live vs offline parity: each frame's live answer against ``analyze`` of that frame.

Why this benchmark: the live service warm-starts its surrogate, rebuilds it when its tree cap
is reached and keeps a live interval ensemble, all to stay cheap per frame. None of that may
change the answer: a frame's live contribution values and labels must be what the offline
``analyze`` (:func:`motex_stream.analysis.pipeline.run_analysis`) of that frame says, with the
same catalogue, settings and seed, within the intervals (issue 20).

For each starting model, a two-motif crossover series (motif A → motif B, a logistic step in
the middle, seeded noise) is generated with the library; the live analyzer is prepared on
frame 1 and fed every frame (``MotexFrameAnalyzer.analyze``, the service's path), with a tree
cap small enough to force at least two rebuilds. Every frame is also written as a ``.gr`` and
analysed offline from scratch. Per frame: Pearson r of the live and offline values, the share
of atoms with the same label, and max |Δvalue| in units of the interval (|Δ| divided by the
root sum of squares of the live and the offline interval half-widths, i.e. a z-like score of
the disagreement). Frames where a rebuilt surrogate was swapped in are marked ``R``.

Starting models: ``two-motif`` (an α-Keggin W12O40 unit + a W13 cuboctahedron, 25 W) and
``decoy`` (both interpenetrating Keggin units of 109725, 24 W, + the W13 cluster: 37 W; motif
A is one Keggin unit, so 12 W are decoys that overlap it).

Each frame is analysed offline twice: ``own`` (``run_analysis`` with its own search, the
issue's reference) and ``given`` (``run_analysis(..., search=analyzer.search)``: the live
model's search, no new one). A rebuilt live frame trains ``given``'s model on the same fits
(analyzer module doc), so there it must agree exactly; ``own`` vs ``given`` is the search's own
noise, the part of the ``own`` gap no live model short of a search per frame can close.

Two live analyzers run side by side on the same frames: ``new`` (the service's: rebuilds
train the offline model of the rebuilt frame, in line) and ``baseline`` (the behaviour
before issue 20, kept in ``benchmarks/live_baseline.py``: rebuilds train the warm-start
protocol's model one frame ahead, swapped in a frame later under that frame's warm-start
trees), so the summary's ratios new/baseline come from one run.

With ``--floor`` each frame is also analysed offline with the next seed (another catalogue,
search and ensemble draw): how well offline agrees with itself.

Usage: python benchmarks/bench_live_parity.py [--frames 14] [--catalogue 1500]
       [--models two-motif,decoy] [--max-trees 60] [--rebuild-every 0] [--rebuild-search rescore]
       [--seed 0] [--floor]
       [--no-baseline]
Targets: Pearson ≥ 0.95 and ≥ 90 % same labels on every frame.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile
import time
from importlib.resources import files
from pathlib import Path

import numpy as np
from live_baseline import as_baseline  # benchmarks/ (this script's folder)

from motex_stream.analysis.pipeline import run_analysis
from motex_stream.analysis.result import AnalysisResult
from motex_stream.analysis.settings import LiveModelSettings, ModelSettings
from motex_stream.analysis.steps import default_pdf_settings
from motex_stream.stream.frames import Frame
from motex_stream.stream.live.analyzer import MotexFrameAnalyzer
from motex_stream.stream.live.analyzer_protocol import FrameResult
from motex_stream.stream.sim.series import (
    TwoMotifSeries,
    _cuboctahedron,
    motif_pdf,
    two_motif_series,
)
from motex_stream.structure.starting_model import load_starting_model

SEPARATION = 40.0


def decoy_series(directory: Path, n_frames: int, noise: float, seed: int, crossover: float):
    """Both Keggin units of 109725 (24 W, one is motif A) + a W13 cluster (motif B)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "decoy.xyz"
    k = load_starting_model(
        Path(str(files("motex_stream").joinpath("data/keggin/109725.xyz"))), ["W"], 2.5
    )
    w = k.positions[k.permutable]
    o = k.positions[k.dependent]
    w_b = _cuboctahedron(2.74) + w.mean(axis=0) + np.array([SEPARATION, 0.0, 0.0])
    lines = [f"{len(w) + len(w_b) + len(o)}", "109725 (24 W) + W13 cluster"]
    lines += [f"W {x:.6f} {y:.6f} {z:.6f}" for x, y, z in np.vstack([w, w_b])]
    lines += [f"O {x:.6f} {y:.6f} {z:.6f}" for x, y, z in o]
    path.write_text("\n".join(lines) + "\n")
    model = load_starting_model(path, ["W"], 2.5)
    a = np.arange(0, 24, 2)  # the odd W (1, 3, ..., 23): one α-Keggin unit (the paper)
    b = np.arange(24, 37)
    r = np.round(np.arange(100, 1501) * 0.01, 10)
    settings = default_pdf_settings(r)

    g_a, g_b = (motif_pdf(model, which, r, settings) for which in (a, b))
    return TwoMotifSeries(path, a, b, r, g_a, g_b, n_frames, noise, seed, crossover, 0.7, None)


def make_series(name: str, work: Path, n_frames: int, noise: float, seed: int) -> TwoMotifSeries:
    crossover = (n_frames - 1) / 2
    if name == "two-motif":
        return two_motif_series(
            work / name, n_frames=n_frames, noise=noise, seed=seed, crossover=crossover, width=0.7
        )
    if name == "decoy":
        return decoy_series(work / name, n_frames, noise, seed, crossover)
    raise SystemExit(f"unknown model {name!r}")


def write_gr(path: Path, r: np.ndarray, g: np.ndarray) -> Path:
    path.write_text("".join(f"{a:.6f} {b:.10g}\n" for a, b in zip(r, g, strict=True)))
    return path


#: One answer's (values, interval low, interval high, labels) per atom.
Answer = tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]


def live_answer(result: FrameResult) -> Answer:
    """A live frame's values, intervals and labels."""
    c = result.contributions
    assert c.interval is not None and c.label is not None
    return c.value, c.interval[0], c.interval[1], list(c.label)


def offline_answer(result: AnalysisResult) -> Answer:
    """An offline result's values, intervals and labels."""
    ci = result.intervals
    return result.contributions.value, ci.low, ci.high, list(ci.label)


def compare(live: Answer, off: Answer) -> dict:
    """Pearson r, share of the same labels, max |Δ| in combined half-widths, median ratio of
    the half-widths and keep counts of one answer (``live``) against another (``off``)."""
    lv, llo, lhi, llab = live
    ov, olo, ohi, olab = off
    lhw, ohw = (np.asarray(lhi) - llo) / 2, (np.asarray(ohi) - olo) / 2
    ok = np.isfinite(lv) & np.isfinite(ov)
    z = np.abs(lv - ov)[ok] / np.sqrt(lhw[ok] ** 2 + ohw[ok] ** 2)
    return {
        "pearson": float(np.corrcoef(lv[ok], ov[ok])[0, 1]),
        "same": float(np.mean([a == b for a, b in zip(llab, olab, strict=True)])),
        "zmax": float(np.nanmax(z)) if np.isfinite(z).any() else 0.0,
        "hw_ratio": float(np.median(lhw[ok] / ohw[ok])),
        "keep_live": llab.count("keep"),
        "keep_off": olab.count("keep"),
    }


def run_model(name: str, args: argparse.Namespace, work: Path) -> list[dict]:
    series = make_series(name, work, args.frames, args.noise, args.seed)
    live = LiveModelSettings(
        name=name,
        starting_model=str(series.model_path),
        catalogue_size=args.catalogue,
        refit=args.catalogue,
        rounds=args.rounds,
        max_trees=args.max_trees,
        search_calls=args.search_calls,
        cv_folds=args.cv_folds,
        ci_models=args.ci_models,
        ci_rows=min(args.catalogue, 2500),
        rebuild_every=args.rebuild_every,
        rebuild_search=args.rebuild_search,
        seed=args.seed,
    )
    shared = {k: v for k, v in live.model_dump().items() if k in ModelSettings.model_fields}
    if "refine_fits" in ModelSettings.model_fields:
        # the offline-only motif refinement by direct fits (issue 21) has no live
        # counterpart; the parity is that of the shared steps (surrogate, SHAP, intervals,
        # confirming pass)
        shared["refine_fits"] = 0
    offline = ModelSettings(**shared)
    reference = Frame("reference", 1, 0.0, series.r, series.frame(0))
    analyzer = MotexFrameAnalyzer.prepare(live, reference, work / f"state-{name}")
    # the baseline restores a copy of the same prepared state (same search, same first model)
    baseline = None
    if not args.no_baseline:
        shutil.copytree(work / f"state-{name}", work / f"state-{name}-baseline")
        baseline = as_baseline(
            MotexFrameAnalyzer.prepare(
                live.updated(rebuild_every=0), reference, work / f"state-{name}-baseline"
            )
        )
    rows = []
    for i in range(series.n_frames):
        g = series.frame(i)
        frame = Frame("run", i + 1, float(i), series.r, g)
        res = analyzer.analyze(frame)
        path = write_gr(work / f"{name}-{i + 1}.gr", series.r, g)
        own = run_analysis(path, offline)
        given = run_analysis(path, offline, search=analyzer.search)
        row: dict = {"frame": i + 1, "x": series.fraction_b(i)}
        pairs = {
            "own": (live_answer(res), offline_answer(own)),
            "given": (live_answer(res), offline_answer(given)),
            "noise": (offline_answer(given), offline_answer(own)),  # the search's own noise
        }
        if baseline is not None:
            old = baseline.analyze(frame)
            pairs["b_own"] = (live_answer(old), offline_answer(own))
            pairs["b_given"] = (live_answer(old), offline_answer(given))
        if args.floor:
            # offline against offline with the next seed (another catalogue, search and
            # ensemble draw) on the same frame
            other_seed = run_analysis(path, offline.updated(seed=args.seed + 1))
            pairs["floor"] = (offline_answer(other_seed), offline_answer(own))
        for key, (one, other) in pairs.items():
            row.update({f"{key}_{k}": v for k, v in compare(one, other).items()})
        row.update(
            rebuilt=bool(res.model_quality.rebuilt),
            trees=int(res.model_quality.n_trees or 0),
            change=res.change,
        )
        rows.append(row)
        change = row["change"]
        print(
            f"{name:<10s} {i + 1:5d} {row['x']:5.2f} {'R' if row['rebuilt'] else ' '} "
            f"{row['trees']:5d} "
            + " ".join(
                f"{row[f'{k}_pearson']:6.3f} {100 * row[f'{k}_same']:4.0f}%"
                for k in COLUMNS
                if f"{k}_same" in row
            )
            + f" {row['given_zmax']:6.2f} {row['own_keep_live']:3d}/{row['own_keep_off']:<3d}"
            + (
                f"  change frame {change.frame}: +{len(change.atoms_gained)}"
                f" -{len(change.atoms_lost)}"
                if change
                else ""
            ),
            flush=True,
        )
    return rows


#: Comparisons per frame, in print order: new live vs offline with its own search and with
#: the live search; the baseline live vs the same two; offline own vs given (search noise);
#: offline vs offline with seed + 1 (--floor).
COLUMNS = ("own", "given", "b_own", "b_given", "noise", "floor")


def stats(rows: list[dict], key: str, which: list[dict] | None = None) -> dict[str, float]:
    """Pearson min/median, same labels min/median, frames on target, max |Δ|/hw of one
    comparison over ``which`` rows (default all)."""
    rs = rows if which is None else which
    p = np.array([r[f"{key}_pearson"] for r in rs])
    s = np.array([r[f"{key}_same"] for r in rs])
    return {
        "pearson min": float(p.min()),
        "pearson median": float(np.median(p)),
        "same min %": 100 * float(s.min()),
        "same median %": 100 * float(np.median(s)),
        "on target": float(np.sum((p >= 0.95) & (s >= 0.9))),
        "max |Δ|/hw": float(max(r[f"{key}_zmax"] for r in rs)),
    }


def print_summary(name: str, rows: list[dict]) -> None:
    """One table per model: each metric for the new live and the baseline against offline
    with its own search and with the live search (ratio new/baseline), on every frame and on
    the rebuilt frames alone, and the search's own noise."""
    rebuilt = [r for r in rows if r["rebuilt"]]
    print(f"\n{name}: {len(rows)} frames, {len(rebuilt)} rebuilt (R)")
    print(f"{'vs offline':<22s} {'metric':<15s} {'baseline':>9s} {'new':>9s} {'new/base':>9s}")
    for label, which in (("every frame", rows), ("rebuilt frames", rebuilt)):
        if not which:
            continue
        for ref in ("own", "given"):
            new = stats(rows, ref, which)
            base = stats(rows, f"b_{ref}", which) if "b_own_same" in rows[0] else None
            for metric, v in new.items():
                b = None if base is None else base[metric]
                ratio = f"{v / b:9.2f}" if b else f"{'-':>9s}"
                print(
                    f"{ref + ', ' + label:<22s} {metric:<15s} "
                    f"{'-' if b is None else f'{b:.3f}':>9s} {v:9.3f} {ratio}"
                    + (f"  (of {len(which)})" if metric == "on target" else "")
                )
    noise = stats(rows, "noise")
    print(
        f"search noise (offline own vs given): Pearson min {noise['pearson min']:.3f}, "
        f"same labels min {noise['same min %']:.0f}% median {noise['same median %']:.0f}%"
    )
    if "floor_same" in rows[0]:
        floor = stats(rows, "floor")
        print(
            f"floor (offline vs offline seed+1): Pearson min {floor['pearson min']:.3f}, "
            f"same labels min {floor['same min %']:.0f}% median {floor['same median %']:.0f}%"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=14)
    ap.add_argument("--catalogue", type=int, default=1500)
    ap.add_argument("--models", default="two-motif,decoy")
    ap.add_argument("--max-trees", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument(
        "--rebuild-every", type=int, default=0, help="the live rebuild_every (0: cap and drift)"
    )
    ap.add_argument(
        "--rebuild-search",
        choices=("rescore", "search"),
        default="rescore",
        help="the live rebuild_search (search: a rebuild runs the frame's own search)",
    )
    ap.add_argument("--search-calls", type=int, default=6)
    ap.add_argument("--cv-folds", type=int, default=3)
    ap.add_argument("--ci-models", type=int, default=4)
    ap.add_argument("--noise", type=float, default=0.01)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--no-baseline", action="store_true", help="skip the baseline (pre-issue-20) analyzer"
    )
    ap.add_argument(
        "--floor",
        action="store_true",
        help="also offline vs offline with seed + 1 on each frame (how reproducible offline is)",
    )
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    t0 = time.perf_counter()
    print(
        f"catalogue {args.catalogue} (all refitted), rounds {args.rounds}, max_trees "
        f"{args.max_trees}, rebuild_every {args.rebuild_every} ({args.rebuild_search}), search "
        f"{args.search_calls}x{args.cv_folds}, ci_models "
        f"{args.ci_models}, noise {args.noise}, seed {args.seed}"
    )
    print(
        f"{'model':<10s} {'frame':>5s} {'x_B':>5s} R {'trees':>5s} "
        + " ".join(
            f"{k + ' r':>6s} {'same':>5s}"
            for k in COLUMNS
            if (k != "floor" or args.floor) and not (k.startswith("b_") and args.no_baseline)
        )
        + " |Δ|/hw(given) keep live/own"
    )
    summary = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            rows = run_model(name, args, Path(tmp))
            summary.append((name, rows))
    for name, rows in summary:
        print_summary(name, rows)
    print(f"({time.perf_counter() - t0:.0f} s, load {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
