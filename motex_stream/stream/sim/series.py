"""A time series whose motif changes: the proof that live contribution values track motifs.

The starting model holds two different motifs far apart (further than any pair the PDF
calculator keeps, so they never interact): motif A is one complete α-Keggin W12O40 unit
(the 12 odd W of 109725 and their O); motif B is a compact 13-atom W cuboctahedron (bcc-W
nearest-neighbour distance). Frame t is the mixture (1 - x_t)·G_A + x_t·G_B with x_t going
from 0 to 1, plus seeded noise, so the atoms that help the fit move from A to B mid-series.

Three profiles of x_t: a linear ramp over the whole series (the default: the demo's slow
drift); a *crossover* (``crossover=c``: a logistic step centred on frame c, ``width`` frames
wide, as in a phase transition, so change detection has a frame to be judged against); and a
*stationary* series (``hold=x``: the same mixture every frame, only the noise differs, for
false alarms).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import numpy as np

from motex_stream.analysis.steps import default_pdf_settings
from motex_stream.pdf.realspace import realspace_pdf
from motex_stream.pdf.settings import PDFSettings
from motex_stream.structure.starting_model import StartingModel, load_starting_model

SEPARATION = 40.0  # Å between the two motifs: far beyond the calculator's pair range


@dataclass(frozen=True)
class TwoMotifSeries:
    """The model file, which permutable atoms belong to A and B, and a frame generator."""

    model_path: Path
    motif_a: np.ndarray  # 0-based indices among the permutable atoms (file order)
    motif_b: np.ndarray
    r: np.ndarray
    g_a: np.ndarray
    g_b: np.ndarray
    n_frames: int
    noise: float
    seed: int
    crossover: float | None = None  # 0-based frame where x = 0.5 (logistic step); None: ramp
    width: float = 0.5  # logistic scale of the crossover, in frames
    hold: float | None = None  # fixed x for every frame (a stationary series)

    def fraction_b(self, i: int) -> float:
        """x_i, motif B's share of frame i (0-based), by the series' profile."""
        if self.hold is not None:
            return float(self.hold)
        if self.crossover is not None:
            return float(1.0 / (1.0 + np.exp(-(i - self.crossover) / self.width)))
        return i / max(self.n_frames - 1, 1)

    def frame(self, i: int) -> np.ndarray:
        """G of frame i (0-based): the A→B mixture plus seeded Gaussian noise."""
        x = self.fraction_b(i)
        g = (1 - x) * self.g_a + x * self.g_b
        rng = np.random.default_rng((self.seed, i))
        return g + self.noise * np.abs(g).max() * rng.standard_normal(g.size)

    def frame_source(self) -> Callable[[int], np.ndarray]:
        return self.frame


def _cuboctahedron(nn: float) -> np.ndarray:
    half = nn / np.sqrt(2)
    pts = [(0.0, 0.0, 0.0)]
    for a in (-half, half):
        for b in (-half, half):
            pts += [(a, b, 0.0), (a, 0.0, b), (0.0, a, b)]
    return np.array(pts)


def write_two_motif_model(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Write the two-motif starting model (W first, then O); return A's and B's W indices."""
    keggin = load_starting_model(
        Path(str(files("motex_stream").joinpath("data/keggin/109725.xyz"))), ["W"], 2.5
    )
    odd = np.zeros(keggin.n_permutable, dtype=bool)
    odd[0::2] = True  # W1, W3, ..., W23 form one α-Keggin unit (the paper's result)
    symbols, pos = keggin.motif_positions(odd)
    w_a = pos[[s == "W" for s in symbols]]
    o_a = pos[[s == "O" for s in symbols]]
    centre = pos.mean(axis=0)
    w_b = _cuboctahedron(2.74) + centre + np.array([SEPARATION, 0.0, 0.0])
    lines = [f"{len(w_a) + len(w_b) + len(o_a)}", "two motifs: alpha-Keggin W12O40 + W13 cluster"]
    lines += [f"W {x:.6f} {y:.6f} {z:.6f}" for x, y, z in np.vstack([w_a, w_b])]
    lines += [f"O {x:.6f} {y:.6f} {z:.6f}" for x, y, z in o_a]
    path.write_text("\n".join(lines) + "\n")
    return np.arange(len(w_a)), np.arange(len(w_a), len(w_a) + len(w_b))


def two_motif_series(
    directory: Path,
    n_frames: int = 20,
    noise: float = 0.005,
    seed: int = 0,
    r: np.ndarray | None = None,
    settings: PDFSettings | None = None,
    *,
    crossover: float | None = None,
    width: float = 0.5,
    hold: float | None = None,
) -> TwoMotifSeries:
    """Build the model file in ``directory`` and the pure-motif PDFs on grid ``r``.

    ``crossover``/``width``/``hold`` choose the profile of motif B's share (module doc);
    ``noise`` is the Gaussian noise's standard deviation relative to max |G| of each frame.
    """
    if hold is not None and crossover is not None:
        raise ValueError("a series either holds a mixture or crosses over, not both")
    if width <= 0:
        raise ValueError(f"width must be positive, got {width}")
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "two_motifs.xyz"
    a, b = write_two_motif_model(path)
    model = load_starting_model(path, ["W"], 2.5)
    r = np.round(np.arange(100, 1501) * 0.01, 10) if r is None else np.asarray(r, dtype=float)
    settings = settings or default_pdf_settings(r)

    g_a, g_b = (motif_pdf(model, which, r, settings) for which in (a, b))
    return TwoMotifSeries(path, a, b, r, g_a, g_b, n_frames, noise, seed, crossover, width, hold)


def motif_pdf(
    model: StartingModel, which: np.ndarray, r: np.ndarray, settings: PDFSettings
) -> np.ndarray:
    """The PDF on ``r`` of the motif keeping permutable atoms ``which`` (with their bonded
    dependents), scaled to unit RMS so that two motifs weigh equally in a mixture's fit norm."""
    mask = np.zeros(model.n_permutable, dtype=bool)
    mask[which] = True
    symbols, pos = model.motif_positions(mask)
    r_calc, g = realspace_pdf(symbols, pos, settings)
    g = np.interp(r, r_calc, g)
    return g / np.sqrt(np.mean(g**2))
