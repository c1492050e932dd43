"""Starting models (stage 1 input): reading clusters and choosing permutable atoms."""

from motex_stream.structure.starting_model import (
    StartingModel,
    StructureError,
    build_starting_model,
    load_starting_model,
)

__all__ = ["StartingModel", "StructureError", "build_starting_model", "load_starting_model"]
