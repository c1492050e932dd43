"""The tuned XGBoost settings and the size of ensemble a SHAP budget affords.

**Model size is part of the objective.** The surrogate exists only to be explained: its
TreeSHAP values become the atom contribution values. Exact TreeSHAP costs about
``rows × Σ_trees leaves × depth²`` (≈3 ns per unit per row on two cores with xgboost's CPU
implementation). A 150-tree depth-8 ensemble is as accurate as a 40-tree depth-4 one on mask
data but takes a minute to explain 10⁴ motifs instead of a third of a second. The
hyperparameter search (:mod:`motex_stream.model.search`) therefore caps the number of
boosting rounds per depth so that the resulting ensemble fits a SHAP cost budget
(:data:`DEFAULT_SHAP_BUDGET`); deep trees only win if they are good with few rounds.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from motex_stream.model.features import TRAIN_NTHREAD

#: Per-row TreeSHAP cost budget of a trained ensemble, in units of Σ_trees leaves × depth²
#: (bounded above by ``n_trees · 2**depth · depth**2``). 50 000 units ≈ 1.5 s for 10⁴ motifs
#: on two cores — the share of the 15 s offline analysis left for SHAP after fitting and search.
DEFAULT_SHAP_BUDGET = 50_000

#: Per-frame TreeSHAP budget of the live service for the trees one update adds (same units):
#: 3 300 units ≈ 0.1 s for 10⁴ catalogue motifs, half of the ~0.2 s a frame may cost.
FRAME_SHAP_BUDGET = 3_300

#: Upper bound on boosting rounds anywhere in the surrogate (search, training, rebuilds).
MAX_ROUNDS = 300


def tree_shap_cost(max_depth: int, n_trees: int) -> int:
    """Upper bound of the per-row TreeSHAP cost of ``n_trees`` trees of depth ``max_depth``."""
    return int(n_trees) * (2 ** int(max_depth)) * int(max_depth) ** 2


def rounds_for_budget(max_depth: int, budget: float, cap: int = MAX_ROUNDS) -> int:
    """Most boosting rounds at this depth whose ensemble still fits the SHAP ``budget``."""
    per_tree = tree_shap_cost(max_depth, 1)
    return max(1, min(int(cap), int(budget // per_tree)))


@dataclass
class Hyperparameters:
    """The tuned XGBoost settings; ``n_estimators`` is the round count to train (or cap)."""

    learning_rate: float = 0.3
    max_depth: int = 4
    min_child_weight: float = 1.0
    subsample: float = 1.0
    colsample_bytree: float = 1.0
    reg_lambda: float = 1.0
    n_estimators: int = 100

    def to_xgb_params(self, *, seed: int = 0, nthread: int = TRAIN_NTHREAD) -> dict[str, Any]:
        """Native ``xgb.train`` parameters (squared-error regression, MAE as eval metric);
        ``nthread``: :data:`~motex_stream.model.features.TRAIN_NTHREAD` unless given."""
        return {
            "objective": "reg:squarederror",
            "eval_metric": "mae",
            "tree_method": "hist",
            "eta": float(self.learning_rate),
            "max_depth": int(self.max_depth),
            "min_child_weight": float(self.min_child_weight),
            "subsample": float(self.subsample),
            "colsample_bytree": float(self.colsample_bytree),
            "lambda": float(self.reg_lambda),
            "nthread": int(nthread),
            "seed": int(seed),
            "verbosity": 0,
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Hyperparameters:
        return cls(
            learning_rate=float(d["learning_rate"]),
            max_depth=int(d["max_depth"]),
            min_child_weight=float(d["min_child_weight"]),
            subsample=float(d["subsample"]),
            colsample_bytree=float(d["colsample_bytree"]),
            reg_lambda=float(d["reg_lambda"]),
            n_estimators=int(d["n_estimators"]),
        )
