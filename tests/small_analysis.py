"""A small real analysis of 109725 on the DanMAX data, up to the trained surrogate: the steps
``analyze`` runs (fit data, model, catalogue, engine, fits, searched surrogate), for tests that
need real inputs to the later steps (intervals, ensembles) without running a whole analysis."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from motex_stream.analysis import steps
from motex_stream.analysis.settings import ModelSettings
from motex_stream.fitting.results import FitResults
from motex_stream.model.training import TrainedModel
from motex_stream.pdf.batched import PreparedModel
from tests.conftest import KEGGIN


@dataclass(frozen=True)
class SmallAnalysis:
    settings: ModelSettings  # resolved (Q range from the data)
    masks: Any  # the catalogue
    engine: PreparedModel
    g: np.ndarray
    fits: FitResults
    trained: TrainedModel


def small_analysis(**settings: Any) -> SmallAnalysis:
    """109725 (permute W) on DanMAX_AlphaKeggin.gr with ``settings`` (qmax 20 unless given)."""
    given = ModelSettings(starting_model=KEGGIN / "109725.xyz", **{"qmax": 20.0, **settings})
    data = steps.load_fit_data(KEGGIN / "DanMAX_AlphaKeggin.gr", given)
    model = steps.load_model(data.settings)
    masks = steps.make_catalogue(model, data.settings)
    engine = steps.prepare_engine(model, data.settings, data.r)
    fits = steps.fit_masks(engine, masks, data.g, data.settings.zoom)
    trained = steps.train_surrogate(masks, fits.rwp, data.settings)
    return SmallAnalysis(data.settings, masks, engine, data.g, fits, trained)
