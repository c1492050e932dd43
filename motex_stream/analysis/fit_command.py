"""`motex-stream fit`: fit user-given masks (CSV columns w1..wN) and write one row per mask."""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from motex_stream.analysis import steps
from motex_stream.analysis.settings import ModelSettings
from motex_stream.cli_flags import settings_from_args
from motex_stream.fitting.reference_fit import reference_fit


def read_masks(path: Path, n_permutable: int) -> np.ndarray:
    """Masks from a CSV with header w1..wN (other columns ignored); clear errors otherwise."""
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        cols = [f"w{i}" for i in range(1, n_permutable + 1)]
        missing = [c for c in cols if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(
                f"{path}: needs columns w1..w{n_permutable} (the model has {n_permutable} "
                f"permutable atoms); missing {missing[:5]}"
            )
        rows = []
        for line, row in enumerate(reader, start=2):
            try:
                bits = [int(float(row[c])) for c in cols]
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{path}:{line}: mask bits must be 0 or 1 ({exc})") from exc
            if any(b not in (0, 1) for b in bits):
                raise ValueError(f"{path}:{line}: mask bits must be 0 or 1")
            rows.append(bits)
    if not rows:
        raise ValueError(f"{path}: no masks")
    return np.array(rows, dtype=bool)


def run_fit_command(args: argparse.Namespace) -> int:
    settings = settings_from_args(args, ModelSettings)
    if args.out.is_dir():
        raise ValueError(f"--out {args.out} is a folder; fit writes one CSV file")
    data = steps.load_fit_data(args.data, settings)
    model = steps.load_model(data.settings)
    masks = read_masks(args.masks, model.n_permutable)
    if args.calculator == "debye":
        fits = reference_fit(model, masks, data.g, data.r, data.pdf, calculator="debye")
    else:
        engine = steps.prepare_engine(model, data.settings, data.r)
        fits = steps.fit_masks(engine, masks, data.g, data.settings.zoom, progress=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["rwp", "scale", "zoom1", "zoom2", "zoom3"])
        for i in range(len(fits)):
            w.writerow(
                [
                    f"{fits.rwp[i]:.10g}",
                    f"{fits.scale[i]:.10g}",
                    *(f"{z:.10g}" for z in fits.zoom[i]),
                ]
            )
    return 0
