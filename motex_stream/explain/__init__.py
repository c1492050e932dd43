"""SHAP values of the surrogate and the per-atom contribution values derived from them."""

from motex_stream.explain.contributions import (
    AtomContributions,
    ShapCache,
    atom_contributions,
    expected_value,
    shap_summary_plot,
    shap_values,
)

__all__ = [
    "AtomContributions",
    "ShapCache",
    "atom_contributions",
    "expected_value",
    "shap_summary_plot",
    "shap_values",
]
