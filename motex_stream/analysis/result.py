"""The outcome of one offline ML-MotEx analysis, as the writers and the CLI see it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from motex_stream.catalogue.packed import PackedMasks
from motex_stream.explain.confidence import ContributionIntervals
from motex_stream.explain.contributions import AtomContributions
from motex_stream.explain.refine import RefinedMotif
from motex_stream.fitting.results import FitResults
from motex_stream.structure.starting_model import StartingModel
from motex_stream.structure.symmetry import Sites


@dataclass
class AnalysisResult:
    """Everything `motex-stream analyze` computed, in memory."""

    model: StartingModel
    # (M, N) bool, N = permutable atoms in file order; ``analyze`` keeps it bit-packed
    # (PackedMasks: index rows, or np.asarray for all of them at 8x the memory)
    masks: np.ndarray | PackedMasks
    fits: FitResults
    # the motifs SHAP explained (all M, or contributions.explained of a larger catalogue):
    features: np.ndarray  # (rows, N+1): mask bits then motif size
    shap: np.ndarray  # (rows, N+1) SHAP values of the trained surrogate
    contributions: AtomContributions
    test_mae: float
    test_mse: float
    r: np.ndarray  # fit grid
    g_obs: np.ndarray
    g_best: np.ndarray  # fitted G of the best motif on r
    settings: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    intervals: ContributionIntervals | None = None  # CI and keep/remove/uncertain per atom
    # motif refinement by direct fits (steps.refine_motif); None when refine_fits is 0
    refinement: RefinedMotif | None = None
    # symmetry-equivalent permutable atoms within the calculator's pair range (the live
    # messages' ``structure.equivalent``); None: the writers find them with no cutoff
    sites: Sites | None = None

    @property
    def best(self) -> int:
        return self.fits.best()

    def atom_numbers(self) -> np.ndarray:
        """1-based index in the starting-model file of each permutable atom."""
        return self.model.permutable + 1
