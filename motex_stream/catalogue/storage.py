"""Motif catalogues on disk: bit-packed masks in a compressed ``.npz``.

A catalogue is fitted once and then reused for every frame of a stream, so it must survive a
restart bit-for-bit. Masks are stored packed (8 atoms per byte) because catalogues of
10^4-10^6 motifs over 24-132 atoms would otherwise be mostly zero padding; ``n_permutable``
is stored alongside because packing pads each row to a whole byte and the padding cannot be
told apart from removed atoms.
"""

from __future__ import annotations

import errno
import logging
import os
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

_FORMAT_VERSION = 1


class CatalogueFileError(ValueError):
    """A catalogue file that exists but cannot be read back as a catalogue."""


def _as_mask_array(masks: np.ndarray) -> np.ndarray:
    """Validate a (M, N) array of 0/1 values and return it as bool.

    Integer 0/1 input is accepted because masks often come from CSV files or model feature
    matrices; anything else (2, -1, 0.5) is a bug upstream and must not be silently cast.
    """
    arr = np.asarray(masks)
    if arr.ndim != 2:
        raise ValueError(f"masks must be a 2-D (n_motifs, n_permutable) array, got {arr.shape}")
    if arr.dtype == bool:
        return arr
    if arr.size and not np.isin(arr, (0, 1)).all():
        raise ValueError("masks must contain only 0/1 (or bool) values")
    return arr.astype(bool)


def pack_masks(masks: np.ndarray) -> np.ndarray:
    """Pack (M, N) 0/1 masks into (M, ceil(N/8)) uint8, most significant bit first."""
    return np.packbits(_as_mask_array(masks), axis=1)


def checked_packed(packed: np.ndarray, n_permutable: int) -> np.ndarray:
    """``packed`` as a 2-D uint8 array of whole-byte rows for ``n_permutable`` atoms, or a
    ValueError saying what does not fit (a file or a caller's array may hold anything)."""
    packed = np.asarray(packed)
    if packed.dtype != np.uint8 or packed.ndim != 2:
        raise ValueError(
            f"packed masks must be a 2-D uint8 array, got {packed.dtype} {packed.shape}"
        )
    if n_permutable < 0 or packed.shape[1] != (n_permutable + 7) // 8:
        raise ValueError(
            f"{packed.shape[1]} bytes per row cannot hold exactly {n_permutable} permutable atoms"
        )
    return packed


def unpack_masks(packed: np.ndarray, n_permutable: int) -> np.ndarray:
    """Inverse of :func:`pack_masks`; ``n_permutable`` drops the byte padding."""
    packed = checked_packed(packed, n_permutable)
    return np.unpackbits(packed, axis=1, count=n_permutable).astype(bool)


def unique_row_indices(masks: np.ndarray) -> np.ndarray:
    """Indices of the first occurrence of each distinct row, in their original order.

    Keeping first occurrences (rather than ``np.unique``'s sorted order) preserves the draw
    order of a seeded generator, so a catalogue truncated to its first k rows is still a
    random sample. Rows are compared through their packed bytes so that any N works.
    """
    arr = _as_mask_array(masks)
    if arr.shape[0] == 0:
        return np.zeros(0, dtype=np.intp)
    return _unique_packed_rows(np.packbits(arr, axis=1))


def _packed_row_keys(packed: np.ndarray) -> np.ndarray:
    """One unsigned integer per row of at most 8 packed bytes, equal iff the rows are equal.

    Why: sorting ``np.void`` row views goes through a generic byte-compare per comparison and
    is several times slower than sorting machine integers. Each row is zero-padded to 1, 2,
    4 or 8 bytes and read as one integer; the padding is the same for every row, so equality
    is exact. The integers' order is not the rows' byte order, and no caller relies on it.
    """
    n_rows, width = packed.shape
    if not 1 <= width <= 8:
        raise ValueError(f"row keys need 1-8 bytes per row, got {width}")
    key_bytes = 1 << (width - 1).bit_length()  # 1, 2, 4 or 8
    dtype = np.dtype(f"u{key_bytes}")
    if width == key_bytes:
        return np.ascontiguousarray(packed).view(dtype).ravel()
    padded = np.zeros((n_rows, key_bytes), dtype=np.uint8)
    padded[:, :width] = packed
    return padded.view(dtype).ravel()


def _packed_row_words(packed: np.ndarray) -> np.ndarray:
    """Rows of packed bytes as ``(M, ceil(W/8))`` uint64 words, zero-padded at the end.

    Why: rows wider than 8 bytes cannot be one integer, but a few integer columns still
    sort (``np.lexsort``) and compare far faster than ``np.void`` rows, and two rows are
    equal iff all their words are.
    """
    n_rows, width = packed.shape
    n_words = (width + 7) // 8
    if width == 8 * n_words:
        return np.ascontiguousarray(packed).view(np.uint64)
    padded = np.zeros((n_rows, 8 * n_words), dtype=np.uint8)
    padded[:, :width] = packed
    return padded.view(np.uint64)


def _first_of_each_key(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(index of the first occurrence, key) of each distinct key, in ascending key order.

    A stable sort puts each run of equal keys in index order, so a run's start is the key's
    first occurrence; callers that want draw order sort the indices, callers that look keys
    up (``searchsorted``) keep the key order.
    """
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    starts = np.empty(len(order), dtype=bool)
    starts[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=starts[1:])
    return order[starts], ordered[starts]


def _unique_packed_rows(packed: np.ndarray) -> np.ndarray:
    """:func:`unique_row_indices` of rows already packed with :func:`pack_masks`.

    Rows are compared as integers (:func:`_packed_row_keys`, :func:`_packed_row_words`)
    rather than ``np.void`` views: the same first occurrences, in their original order, from
    a stable sort whose runs of equal rows start at their earliest index.
    """
    if packed.shape[0] == 0:
        return np.zeros(0, dtype=np.intp)
    if packed.shape[1] == 0:  # N == 0: every row is the same empty mask
        return np.zeros(1, dtype=np.intp)
    if packed.shape[1] <= 8:
        first, _ = _first_of_each_key(_packed_row_keys(packed))
        return np.sort(first)
    words = _packed_row_words(packed)
    # np.lexsort is stable, so each run of equal rows starts at its first occurrence.
    order = np.lexsort(words.T[::-1])
    ordered = words[order]
    starts = np.empty(len(order), dtype=bool)
    starts[0] = True
    np.any(ordered[1:] != ordered[:-1], axis=1, out=starts[1:])
    return np.sort(order[starts])


def iter_unpacked(
    packed: np.ndarray, n_permutable: int, chunk: int
) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, bool masks) of ``chunk`` rows at a time from a packed catalogue.

    Why: a fit needs bool masks, but only a chunk's worth at once; unpacking chunk by chunk
    keeps a 10^6-10^7 motif catalogue at N/8 bytes a motif for the whole run.
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    for start in range(0, packed.shape[0], chunk):
        yield start, unpack_masks(packed[start : start + chunk], n_permutable)


def dedupe_masks(masks: np.ndarray) -> np.ndarray:
    """Distinct rows of ``masks`` (bool), first occurrences kept in order."""
    arr = _as_mask_array(masks)
    return arr[unique_row_indices(arr)]


@dataclass(frozen=True, eq=False)
class Catalogue:
    """A set of candidate motifs (bool masks over the permutable atoms) and its provenance.

    ``generator`` and ``seed`` are kept with the masks so a saved catalogue says how to
    regenerate it; equality is not defined because arrays have no single truth value.
    """

    masks: np.ndarray
    generator: str
    seed: int

    def __post_init__(self) -> None:
        masks = np.array(_as_mask_array(self.masks), dtype=bool, copy=True)
        masks.flags.writeable = False  # frozen means frozen: no in-place edits of the masks
        object.__setattr__(self, "masks", masks)
        object.__setattr__(self, "seed", int(self.seed))
        object.__setattr__(self, "generator", str(self.generator))

    @property
    def n_motifs(self) -> int:
        return int(self.masks.shape[0])

    @property
    def n_permutable(self) -> int:
        return int(self.masks.shape[1])

    def __len__(self) -> int:
        return self.n_motifs

    def dedupe(self) -> Catalogue:
        """A copy without repeated masks (first occurrences kept, order preserved)."""
        return Catalogue(dedupe_masks(self.masks), self.generator, self.seed)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write a compressed ``.npz`` exactly at ``path`` (no suffix is appended)."""
        path = Path(path)
        with path.open("wb") as fh:
            np.savez_compressed(
                fh,
                packed=pack_masks(self.masks),
                n_permutable=np.int64(self.n_permutable),
                generator=np.str_(self.generator),
                seed=np.int64(self.seed),
                format_version=np.int64(_FORMAT_VERSION),
            )
        logger.debug("saved %d motifs over %d atoms to %s", len(self), self.n_permutable, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Catalogue:
        """Read a file written by :meth:`save`; errors name the file."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(errno.ENOENT, "catalogue file not found", str(path))
        try:
            with np.load(path, allow_pickle=False) as data:
                version = int(data["format_version"])
                if version != _FORMAT_VERSION:
                    raise CatalogueFileError(
                        f"{path}: unsupported catalogue format version {version}"
                    )
                masks = unpack_masks(data["packed"], int(data["n_permutable"]))
                generator = str(data["generator"])
                seed = int(data["seed"])
        except CatalogueFileError:
            raise
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            raise CatalogueFileError(f"{path}: not a readable motif catalogue ({exc})") from exc
        return cls(masks, generator, seed)
