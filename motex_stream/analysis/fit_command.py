"""`motex-stream fit`: fit user-given masks (CSV columns w1..wN) and write one row per mask.

Each output row carries the mask's id and its bits, in the layout of ``analyze``'s
``fits.csv`` (``id, n_kept, rwp, scale, zoom1..3, w1..wN``), so a result can be joined to its
input: the id is the input's ``id`` column when it has one (so ``analyze``'s own fits.csv,
filtered, can be refitted and joined back), else the input row, 0-based.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from motex_stream.analysis import steps
from motex_stream.analysis.settings import ModelSettings
from motex_stream.cli_flags import settings_from_args
from motex_stream.fitting.reference_fit import reference_fit

#: the optional input column whose values identify each mask in the output
ID_COLUMN = "id"


def read_masks(path: Path, n_permutable: int) -> np.ndarray:
    """Masks from a CSV with header w1..wN (other columns ignored); clear errors otherwise."""
    return read_mask_table(path, n_permutable)[1]


def read_mask_table(path: Path, n_permutable: int) -> tuple[list[str], np.ndarray]:
    """(ids, masks) from a CSV with header w1..wN and optionally ``id``; ids default to the
    row's 0-based index."""
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        cols = [f"w{i}" for i in range(1, n_permutable + 1)]
        missing = [c for c in cols if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(
                f"{path}: needs columns w1..w{n_permutable} (the model has {n_permutable} "
                f"permutable atoms); missing {missing[:5]}"
            )
        has_id = ID_COLUMN in (reader.fieldnames or [])
        rows = []
        ids: list[str] = []
        for line, row in enumerate(reader, start=2):
            try:
                bits = [int(float(row[c])) for c in cols]
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{path}:{line}: mask bits must be 0 or 1 ({exc})") from exc
            if any(b not in (0, 1) for b in bits):
                raise ValueError(f"{path}:{line}: mask bits must be 0 or 1")
            rows.append(bits)
            ids.append(str(row[ID_COLUMN]) if has_id else str(len(ids)))
    if not rows:
        raise ValueError(f"{path}: no masks")
    return ids, np.array(rows, dtype=bool)


def run_fit_command(args: argparse.Namespace) -> int:
    settings = settings_from_args(args, ModelSettings)
    if args.out.is_dir():
        raise ValueError(f"--out {args.out} is a folder; fit writes one CSV file")
    data = steps.load_fit_data(args.data, settings)
    model = steps.load_model(data.settings)
    ids, masks = read_mask_table(args.masks, model.n_permutable)
    if args.calculator == "debye":
        fits = reference_fit(model, masks, data.g, data.r, data.pdf, calculator="debye")
    else:
        engine = steps.prepare_engine(model, data.settings, data.r)
        fits = steps.fit_masks(engine, masks, data.g, data.settings.zoom, progress=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    n = masks.shape[1]
    with open(args.out, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(
            [ID_COLUMN, "n_kept", "rwp", "scale", "zoom1", "zoom2", "zoom3"]
            + [f"w{j}" for j in range(1, n + 1)]
        )
        for i in range(len(fits)):
            w.writerow(
                [
                    ids[i],
                    int(masks[i].sum()),
                    f"{fits.rwp[i]:.10g}",
                    f"{fits.scale[i]:.10g}",
                    *(f"{z:.10g}" for z in fits.zoom[i]),
                    *masks[i].astype(int).tolist(),
                ]
            )
    return 0
