"""A motif catalogue kept bit-packed in memory, read like a bool (M, N) array.

Why: ``analyze`` holds its catalogue for the whole run (fits, surrogate, SHAP, intervals,
outputs), and as bools that is one byte per atom per motif: 10^7 motifs over 80 permutable
atoms are 800 MB. Packed (8 atoms per byte, the :func:`~motex_stream.catalogue.storage.pack_masks`
layout) the same catalogue is 100 MB. Every consumer only ever needs some rows as bools at a
time (a fit chunk, a surrogate's training rows, the explained subsample, the best motif), so
:class:`PackedMasks` unpacks exactly the rows asked for and nothing more.
"""

from __future__ import annotations

import operator
from collections.abc import Iterator
from typing import Any

import numpy as np

from motex_stream.catalogue.storage import (
    checked_packed,
    iter_unpacked,
    pack_masks,
    unpack_masks,
)

#: Set bits of every byte value: kept atoms are counted from the packed bytes without
#: unpacking them (one table lookup per 8 atoms).
_POPCOUNT = np.array([bin(v).count("1") for v in range(256)], dtype=np.uint8)
#: Rows per block when a whole-catalogue pass works on the packed bytes (kept counts):
#: bounds the temporaries of a 10^7-motif catalogue to a few MB.
_BLOCK = 65_536


class PackedMasks:
    """Read-only (M, N) bool masks stored as (M, ceil(N/8)) uint8, most significant bit first.

    Indexing follows numpy's for rows: an int gives one bool row (N,), a slice, an integer
    array (any order, repeats allowed, negative from the end) or a length-M bool selector
    gives bool rows (k, N); only those rows are unpacked. ``np.asarray`` unpacks everything
    (see :meth:`__array__`). Columns are indexed on the returned bool rows, not here.
    """

    __slots__ = ("n_permutable", "packed")

    packed: np.ndarray
    n_permutable: int

    def __init__(self, packed: np.ndarray, n_permutable: int) -> None:
        n_permutable = int(n_permutable)
        view = checked_packed(packed, n_permutable).view()
        view.flags.writeable = False  # read-only like a frozen catalogue; the caller's array
        self.packed = view  # stays writable for them
        self.n_permutable = n_permutable

    @classmethod
    def from_bool(cls, masks: np.ndarray) -> PackedMasks:
        """Pack (M, N) 0/1 or bool masks (validated as :func:`pack_masks` does)."""
        arr = np.asarray(masks)
        packed = pack_masks(arr)
        return cls(packed, arr.shape[1])

    # ------------------------------------------------------------------ array-like surface
    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.packed.shape[0]), self.n_permutable)

    @property
    def ndim(self) -> int:
        return 2

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(bool)

    @property
    def size(self) -> int:
        return self.shape[0] * self.shape[1]

    @property
    def nbytes(self) -> int:
        """Bytes held: the packed rows (the bool array would be ``size`` bytes)."""
        return int(self.packed.nbytes)

    def __len__(self) -> int:
        return int(self.packed.shape[0])

    def __repr__(self) -> str:
        m, n = self.shape
        return f"PackedMasks({m} motifs x {n} atoms, {self.nbytes} bytes packed)"

    def __getitem__(self, key: Any) -> np.ndarray:
        """Bool rows of ``key`` (see the class docstring); a tuple key is refused so that
        numpy's paired fancy indexing (``a[rows, cols]``) is never silently mistranslated."""
        if isinstance(key, tuple):
            raise TypeError(
                "PackedMasks indexes rows only; select columns on the result: masks[rows][:, cols]"
            )
        if isinstance(key, slice):
            return unpack_masks(self.packed[key], self.n_permutable)
        if not isinstance(key, bool | np.bool_):
            try:
                i = operator.index(key)
            except TypeError:
                pass
            else:
                row = self.packed[i]  # numpy's bounds check and negative indices
                return np.unpackbits(row, count=self.n_permutable).astype(bool)
        idx = np.asarray(key)
        if idx.ndim != 1:
            raise IndexError(f"row selector must be 1-D, got shape {idx.shape}")
        if idx.size == 0:
            idx = idx.astype(np.intp)
        elif idx.dtype != bool and not np.issubdtype(idx.dtype, np.integer):
            raise IndexError(f"rows must be selected by ints or bools, got {idx.dtype}")
        return unpack_masks(self.packed[idx], self.n_permutable)

    def __iter__(self) -> Iterator[np.ndarray]:
        """Bool rows one by one, unpacked a block at a time."""
        for _, block in self.chunks(_BLOCK):
            yield from block

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        """The whole catalogue as a bool (M, N) array.

        This is the memory cost the packing avoids (one byte per atom per motif, 8x the
        packed size): use it only where every row is truly needed at once as bools; index
        rows or iterate :meth:`chunks` otherwise. Always a new array (``copy=False`` cannot
        be honoured and raises, as numpy asks).
        """
        if copy is False:
            raise ValueError("PackedMasks cannot be viewed as a bool array without a copy")
        out = unpack_masks(self.packed, self.n_permutable)
        return out if dtype is None else out.astype(dtype, copy=False)

    # ------------------------------------------------------------------ whole-catalogue passes
    def chunks(self, size: int) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, bool rows) of ``size`` rows at a time: flat memory whatever M."""
        return iter_unpacked(self.packed, self.n_permutable, size)

    def kept_counts(self) -> np.ndarray:
        """Kept atoms of every motif (int64, (M,)), counted on the packed bytes block-wise.

        Padding bits of the last byte are masked out, so rows packed by other tools (any
        padding) count the same as :func:`pack_masks` output.
        """
        m, n = self.shape
        out = np.zeros(m, dtype=np.int64)
        if n == 0:
            return out
        tail = n % 8
        last = np.uint8(0xFF if tail == 0 else (0xFF << (8 - tail)) & 0xFF)
        for start in range(0, m, _BLOCK):
            block = self.packed[start : start + _BLOCK]
            counts = _POPCOUNT[block[:, :-1]].sum(axis=1, dtype=np.int64)
            counts += _POPCOUNT[block[:, -1] & last]
            out[start : start + len(block)] = counts
        return out


def as_packed(masks: np.ndarray | PackedMasks) -> PackedMasks:
    """``masks`` as :class:`PackedMasks`: itself if already packed, else packed from bools.

    Why: writers and the Dask path accept either form (tests and the ``fit`` command still
    hand bool arrays) and then work on one representation only.
    """
    return masks if isinstance(masks, PackedMasks) else PackedMasks.from_bool(masks)
