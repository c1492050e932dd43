"""motex-stream: ML-MotEx motif extraction from PDF data, offline and live at the beamline.

The package folders follow the pipeline: ``structure`` (starting models) → ``catalogue``
(candidate motifs) → ``pdf`` (DiffPy-compatible PDF engine) → ``fitting`` (batched fits,
Rwp) → ``model`` (XGBoost surrogate) → ``explain`` (SHAP, atom contribution values) →
``analysis`` (the offline `analyze` job and its outputs) → ``stream`` (live sources, the
service, publishers).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("motex-stream")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
