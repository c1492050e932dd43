"""Per-frame explanation cost of the live service: leaf-table TreeSHAP vs xgboost, same run.

109725, a 10,000-motif catalogue fitted to the DanMAX data, a depth-4 surrogate bounded as in
the live service (cap 120 trees, rebuild to 40, 10 new trees per frame). Each frame adds the
new trees' SHAP over the whole catalogue and recomputes the atom contribution values, once
with xgboost's ``pred_contribs`` and the former numpy group statistics (the baseline: what the
live analyzer ran before) and once with the leaf tables (what it runs now). The error column
is the largest |contribution − exact| against a from-scratch exact TreeSHAP of the whole
booster (``pred_contribs`` on every tree).
Usage: python benchmarks/bench_explain.py [--catalogue 10000] [--frames 12]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from motex_stream.analysis.steps import default_pdf_settings
from motex_stream.catalogue import random_catalogue
from motex_stream.explain import ShapCache, atom_contributions, shap_values
from motex_stream.fitting.grfile import read_gr
from motex_stream.fitting.isotropic import fit_isotropic
from motex_stream.model.features import features
from motex_stream.model.hyperparameters import Hyperparameters
from motex_stream.model.incremental import IncrementalSurrogate
from motex_stream.model.training import train
from motex_stream.pdf.batched import prepare_model
from motex_stream.structure import load_starting_model

DATA = Path(__file__).resolve().parents[1] / "motex_stream" / "data" / "keggin"


def numpy_contributions(shap: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """The former implementation of the group means and spreads (baseline cost)."""
    s = shap[:, : masks.shape[1]]
    out = []
    for w in (masks != 0, masks == 0):
        w = w.astype(np.float64)
        n = w.sum(axis=0)
        mean = (s * w).sum(axis=0) / n
        var = ((s - mean) ** 2 * w).sum(axis=0) / n
        out.append((mean, np.sqrt(var)))
    return out[0][0] - out[1][0]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--catalogue", type=int, default=10_000)
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--depth", type=int, default=4)
    args = ap.parse_args()

    data = read_gr(DATA / "DanMAX_AlphaKeggin.gr").crop(1.6, 10.0)
    model = load_starting_model(DATA / "109725.xyz", ["W"], 2.5)
    prep = prepare_model(model, default_pdf_settings(data.r), data.r)
    masks = random_catalogue(model.n_permutable, args.catalogue, seed=0)
    X = features(masks)
    rwp = fit_isotropic(prep, masks, data.g).rwp
    hp = Hyperparameters(learning_rate=0.15, max_depth=args.depth, n_estimators=80)
    base = train(masks, rwp, params=hp, search=False)
    sur = IncrementalSurrogate(base, rounds_per_frame=10, max_trees=120, rebuild_trees=40)

    caches = {"xgboost": ShapCache(X, engine="xgboost"), "leaf": ShapCache(X)}
    for c in caches.values():
        c.update(sur.booster, generation=sur.generation)
    times: dict[str, list[float]] = {k: [] for k in caches}
    err: dict[str, float] = {k: 0.0 for k in caches}
    rebuild_times: dict[str, list[float]] = {k: [] for k in caches}
    rng = np.random.default_rng(1)
    for frame in range(args.frames):
        g = data.g * (1 + 0.02 * np.sin(frame / 3)) + rng.normal(0, 0.01, data.g.shape)
        idx = np.sort(rng.choice(len(masks), len(masks), replace=False))
        fit = sur.update(X[idx], fit_isotropic(prep, masks[idx], g).rwp)
        exact = atom_contributions(shap_values(sur.booster, X), masks).value
        for name, cache in caches.items():
            t = time.perf_counter()
            s = cache.update(sur.booster, rebuilt=fit.rebuilt, generation=sur.generation)
            if name == "xgboost":
                value = numpy_contributions(np.asarray(s), masks)
            else:
                value = atom_contributions(s, masks).value
            dt = time.perf_counter() - t
            (rebuild_times if fit.rebuilt else times)[name].append(dt)
            err[name] = max(err[name], float(np.nanmax(np.abs(value - exact))))

    print(
        f"109725, {len(masks)} motifs, depth {args.depth}, cap 120 / rebuild 40 / 10 trees per "
        f"frame, {args.frames} frames"
    )
    print(
        f"{'explain engine':34s} {'p50 ms':>8s} {'max ms':>8s} {'rebuild ms':>11s} "
        f"{'× faster':>9s} {'max |Δ| vs exact':>17s}"
    )
    p50_base = float(np.median(times["xgboost"]))
    labels = {
        "xgboost": "xgboost pred_contribs (baseline)",
        "leaf": "leaf-table TreeSHAP",
    }
    for name in caches:
        p50 = float(np.median(times[name]))
        rb = max(rebuild_times[name]) * 1e3 if rebuild_times[name] else float("nan")
        print(
            f"{labels[name]:34s} {p50 * 1e3:8.1f} {max(times[name]) * 1e3:8.1f} {rb:11.1f} "
            f"{p50_base / p50:9.1f} {err[name]:17.2e}"
        )


if __name__ == "__main__":
    main()
