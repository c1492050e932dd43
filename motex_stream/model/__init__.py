"""XGBoost surrogate of Rwp(mask): search, training, persistence and live warm-start updates."""

from motex_stream.model.gbdt import (
    DEFAULT_SHAP_BUDGET,
    FRAME_SHAP_BUDGET,
    SEARCH_SPACE,
    FrameFit,
    Hyperparameters,
    IncrementalSurrogate,
    TrainedModel,
    continue_training,
    features,
    load_model,
    rounds_for_budget,
    save_model,
    search_hyperparameters,
    train,
    tree_shap_cost,
)

__all__ = [
    "DEFAULT_SHAP_BUDGET",
    "FRAME_SHAP_BUDGET",
    "SEARCH_SPACE",
    "FrameFit",
    "Hyperparameters",
    "IncrementalSurrogate",
    "TrainedModel",
    "continue_training",
    "features",
    "load_model",
    "rounds_for_budget",
    "save_model",
    "search_hyperparameters",
    "train",
    "tree_shap_cost",
]
