"""Peak RSS of building and fitting (isotropic) a catalogue the way ``analyze`` does.

Each catalogue size runs in a fresh child process: ``steps.make_catalogue`` on a bundled
Keggin model (``--model``: 109725, 24 W permuted; 166877, 72 W) with the DanMAX data, then
``steps.fit_masks`` of its first ``--fit`` motifs (all by default). Printed per size: the
catalogue's type and bytes, the peak RSS before building it (engine, libraries), after
building it and after fitting, and wall seconds. ``--bool`` unpacks the catalogue right
after it is built, which is what ``make_catalogue`` returned before issue 13 (the generator
accumulates packed rows and unpacked them at the end), so one commit measures both. The fit
results (rwp, scale, zoom: 40 bytes a motif) are part of the peak either way.

Usage: python benchmarks/bench_catalogue_memory.py [--sizes 1000000,10000000] [--fit 0]
       [--model 109725] [--bool]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import time
from pathlib import Path

import numpy as np

from motex_stream.analysis import steps
from motex_stream.analysis.settings import ModelSettings
from motex_stream.catalogue import PackedMasks

KEGGIN = Path(__file__).resolve().parents[1] / "motex_stream" / "data" / "keggin"


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _head(masks: np.ndarray | PackedMasks, n: int) -> np.ndarray | PackedMasks:
    """The first ``n`` motifs in the catalogue's own form (a view, nothing unpacked)."""
    if isinstance(masks, PackedMasks):
        return PackedMasks(masks.packed[:n], masks.n_permutable)
    return masks[:n]


def one(size: int, fit: int, model_name: str, unpack: bool, queue: mp.Queue) -> None:
    settings = ModelSettings(
        starting_model=KEGGIN / f"{model_name}.xyz", catalogue_size=size, qmax=20.0
    )
    data = steps.load_fit_data(KEGGIN / "DanMAX_AlphaKeggin.gr", settings)
    model = steps.load_model(data.settings)
    engine = steps.prepare_engine(model, data.settings, data.r)
    steps.fit_masks(engine, np.ones((2, model.n_permutable), bool), data.g, "isotropic")
    base = _peak_mb()  # engine, tables and libraries: the same in every row
    t = time.perf_counter()
    masks = steps.make_catalogue(model, data.settings)
    if unpack:
        masks = np.asarray(masks)
    t_build = time.perf_counter() - t
    built = _peak_mb()
    held = masks.nbytes
    n_fit = len(masks) if fit <= 0 else min(fit, len(masks))
    t = time.perf_counter()
    fits = steps.fit_masks(engine, _head(masks, n_fit), data.g, "isotropic")
    t_fit = time.perf_counter() - t
    queue.put(
        (size, type(masks).__name__, held, base, built, _peak_mb(), len(fits), t_build, t_fit)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="1000000,10000000")
    parser.add_argument("--fit", type=int, default=0, help="motifs fitted per size (0: all)")
    parser.add_argument("--model", default="109725", help="bundled Keggin model (file stem)")
    parser.add_argument("--bool", action="store_true", help="unpack the catalogue (as before)")
    args = parser.parse_args()
    ctx = mp.get_context("spawn")  # a fresh interpreter per size: peaks do not carry over
    print(
        "motifs      type         held MB  base MB  built MB  fitted MB    fitted  build s  fit s"
    )
    for size in (int(s) for s in args.sizes.split(",")):
        queue: mp.Queue = ctx.Queue()
        proc = ctx.Process(target=one, args=(size, args.fit, args.model, args.bool, queue))
        proc.start()
        row = queue.get()
        proc.join()
        size, kind, held, base, built, fitted, n_fit, t_build, t_fit = row
        print(
            f"{size:<11d} {kind:<12s} {held / 2**20:7.1f}  {base:7.1f}  {built:8.1f}  "
            f"{fitted:9.1f}  {n_fit:8d}  {t_build:7.1f}  {t_fit:5.1f}"
        )


if __name__ == "__main__":
    main()
