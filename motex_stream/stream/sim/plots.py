"""Plots of published contribution streams (heatmap vs frame, latency/error vs frame)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


def contribution_heatmap(
    messages: Sequence[dict[str, Any]], path: Path, boundary: int | None = None
) -> Path:
    """Atoms × frames image of contribution values (blue = helps the fit)."""
    values = np.array(
        [
            [np.nan if c["value"] is None else c["value"] for c in m["contributions"]]
            for m in messages
        ]
    )
    atoms = [f"{c['element']}{c['atom']}" for c in messages[0]["contributions"]] if messages else []
    fig, ax = plt.subplots(figsize=(9, 0.22 * max(len(atoms), 10) + 1.5))
    lim = np.nanmax(np.abs(values)) if values.size else 1.0
    im = ax.imshow(
        values.T, aspect="auto", cmap="bwr", vmin=-lim, vmax=lim, interpolation="nearest"
    )
    ax.set_xlabel("frame")
    ax.set_ylabel("atom")
    ax.set_yticks(range(len(atoms)), atoms, fontsize=6)
    ax.set_xticks(range(len(messages)), [str(m["seq"]) for m in messages], fontsize=6)
    if boundary is not None:
        ax.axhline(boundary - 0.5, color="k", lw=1)
    fig.colorbar(im, ax=ax, label="atom contribution value (negative: keep)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def latency_error_plot(
    latency_s: Sequence[float], mae: Sequence[float], path: Path, title: str = ""
) -> Path:
    """Per-frame latency and surrogate error vs frame: both must stay flat over a long series."""
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(8, 5), sharex=True)
    frames = np.arange(1, len(latency_s) + 1)
    a1.plot(frames, np.asarray(latency_s) * 1000, ".-", ms=3)
    a1.set_ylabel("latency (ms)")
    a2.plot(frames, mae, ".-", ms=3, color="tab:red")
    a2.set_ylabel("GBDT MAE on refits")
    a2.set_xlabel("frame")
    if title:
        a1.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
