"""Step 1 of ML-MotEx: catalogues of candidate motifs (0/1 masks over the permutable atoms)."""

from motex_stream.catalogue.generators import (
    cookie_cutter_catalogue,
    default_radius_range,
    random_catalogue,
)
from motex_stream.catalogue.packed import PackedMasks, as_packed
from motex_stream.catalogue.storage import (
    Catalogue,
    CatalogueFileError,
    dedupe_masks,
    pack_masks,
    unique_row_indices,
    unpack_masks,
)

__all__ = [
    "Catalogue",
    "CatalogueFileError",
    "PackedMasks",
    "as_packed",
    "cookie_cutter_catalogue",
    "dedupe_masks",
    "default_radius_range",
    "pack_masks",
    "random_catalogue",
    "unique_row_indices",
    "unpack_masks",
]
