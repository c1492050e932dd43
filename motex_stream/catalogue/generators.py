"""Candidate-motif generators: which subsets of the permutable atoms get fitted.

Two strategies from the ML-MotEx paper (Anker et al. 2022):

* :func:`random_catalogue` is the main-text generator. It draws the motif *size* uniformly
  and only then the atoms, so small and large motifs are equally represented; drawing each
  atom independently would pile almost every motif up around N/2 atoms and leave the GBDT
  blind to the sizes where the answer usually lies.
* :func:`cookie_cutter_catalogue` is the SI strategy for large starting models: cut spheres
  and ellipsoids out of the model, so every motif is spatially compact. Random subsets of a
  bulk cell are almost never compact, and compact pieces are what a nanoparticle is.

Both are seeded with :class:`numpy.random.Generator` and return deduplicated bool masks
``(M, N)`` whose columns are the permutable atoms in file order. Refitting a motif twice
wastes time and biases the learned Rwp surface towards repeated rows, hence the dedupe.
"""

from __future__ import annotations

import logging
from itertools import combinations
from math import comb

import numpy as np
from scipy.spatial.distance import pdist, squareform

from motex_stream.catalogue.storage import (
    _first_of_each_key,
    _packed_row_keys,
    _packed_row_words,
    _unique_packed_rows,
    pack_masks,
    unique_row_indices,
    unpack_masks,
)

logger = logging.getLogger(__name__)

# Rows drawn per round are capped so a huge request does not allocate gigabytes at once.
_MAX_CELLS_PER_ROUND = 1 << 24
_MIN_ROWS_PER_ROUND = 1 << 14
# Uniforms drawn at once within a round (the round's draws are the same either way).
_BLOCK_CELLS = 1 << 20
# Safety net for the rejection loop; it is only reached if the maths above is wrong.
_MAX_ROUNDS = 100_000
# Cookie-cutter cuts cannot reach every mask: stop after this many rounds without a new one,
# or once this many cuts per requested motif have been spent.
_STALL_ROUNDS = 8
_MAX_CUTS_PER_MOTIF = 64
# Axis ratios of the ellipsoids relative to the drawn radius (paper SI: ~0.6-1.6).
_ELLIPSOID_RATIO = (0.6, 1.6)


def _check_size(size: int) -> None:
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")


def _count_bounds(n_permutable: int, lower: int, upper: int | None) -> tuple[int, int]:
    if n_permutable < 1:
        raise ValueError(f"n_permutable must be >= 1, got {n_permutable}")
    upper = n_permutable if upper is None else upper
    if lower < 0:
        raise ValueError(f"lower must be >= 0, got {lower}")
    if upper > n_permutable:
        raise ValueError(f"upper ({upper}) cannot exceed n_permutable ({n_permutable})")
    if lower > upper:
        raise ValueError(f"lower ({lower}) cannot exceed upper ({upper})")
    return lower, upper


def _all_masks(n_permutable: int, lower: int, upper: int) -> np.ndarray:
    """Every mask with ``lower..upper`` kept atoms; only called when there are few enough."""
    total = sum(comb(n_permutable, k) for k in range(lower, upper + 1))
    masks = np.zeros((total, n_permutable), dtype=bool)
    row = 0
    for k in range(lower, upper + 1):
        for kept in combinations(range(n_permutable), k):
            masks[row, list(kept)] = True
            row += 1
    return masks


def _below_kth(u: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Per row, the entries of ``u`` among its ``k`` smallest (none when k = 0)."""
    kth = np.sort(u, axis=1)[np.arange(len(k)), np.maximum(k - 1, 0)]
    return (u <= kth[:, None]) & (k > 0)[:, None]


def _draw_random_packed(
    rng: np.random.Generator, n_rows: int, n_permutable: int, lower: int, upper: int
) -> np.ndarray:
    """The paper's draw, packed: k ~ U{lower..upper}, then a uniformly random k-subset.

    Ranking i.i.d. uniforms gives a uniformly random permutation per row; keeping the atoms
    ranked below k is then a uniform k-subset, with no Python loop over rows. An atom's rank
    is below k iff its uniform is at most the row's k-th smallest (uniforms tie with
    probability ~N²·2⁻⁵⁴ per row): one sort per row instead of two argsorts, the same masks
    ~3x faster. The generator's stream is the same whether the round's uniforms are drawn at
    once or in consecutive blocks of rows, so drawing ~2^20 at a time gives the same masks
    with ~25 MB of temporaries instead of ~400 MB per round.
    """
    k = rng.integers(lower, upper + 1, size=n_rows)
    block = max(1, _BLOCK_CELLS // n_permutable)
    out = np.empty((n_rows, (n_permutable + 7) // 8), dtype=np.uint8)
    for start in range(0, n_rows, block):
        kb = k[start : start + block]
        out[start : start + len(kb)] = pack_masks(
            _below_kth(rng.random((len(kb), n_permutable)), kb)
        )
    return out


def random_catalogue(
    n_permutable: int,
    size: int,
    seed: int,
    lower: int = 1,
    upper: int | None = None,
    *,
    packed: bool = False,
) -> np.ndarray:
    """``size`` distinct random motifs over ``n_permutable`` atoms (bool, ``(M, N)``).

    The kept count of each draw is uniform in ``[lower, upper]`` (default ``1..N``); draws
    repeat until ``size`` distinct masks exist. If the count range admits no more than
    ``size`` masks in total, all of them are returned (shuffled with the seed) instead of
    waiting for a coupon collector to find the last few. Rows keep their draw order.

    With ``packed=True`` the same rows come back bit-packed (:func:`pack_masks` layout,
    ``(M, ceil(N/8))`` uint8). The draws are accumulated packed either way, so a catalogue
    of 10^7 motifs over 240 atoms never holds more than one round (~16·10^6 cells) unpacked:
    300 MB packed instead of 2.4 GB of bools.
    """
    _check_size(size)
    lower, upper = _count_bounds(n_permutable, lower, upper)
    rng = np.random.default_rng(seed)
    total = sum(comb(n_permutable, k) for k in range(lower, upper + 1))
    if total <= size:
        masks = _all_masks(n_permutable, lower, upper)
        logger.info(
            "all %d masks with %d..%d of %d atoms requested (size=%d); returning every one",
            total,
            lower,
            upper,
            n_permutable,
            size,
        )
        masks = masks[rng.permutation(total)]
        return pack_masks(masks) if packed else masks

    # Accepted rows go straight into the result; only their keys are kept sorted on the side.
    out = np.empty((size, (n_permutable + 7) // 8), dtype=np.uint8)
    seen = _SeenRows(out)
    count = 0
    max_rows = max(1, _MAX_CELLS_PER_ROUND // n_permutable)
    for _ in range(_MAX_ROUNDS):
        missing = size - count
        # Overdrawing is harmless (rows keep draw order and the tail is cut off), and big
        # rounds keep the number of rounds small when the last few masks are rare.
        n_rows = min(max_rows, max(missing + missing // 8 + 16, _MIN_ROWS_PER_ROUND))
        batch = _draw_random_packed(rng, n_rows, n_permutable, lower, upper)
        fresh = seen.first_new(batch)
        take = min(len(fresh), missing)
        out[count : count + take] = batch[fresh[:take]]
        if len(fresh) >= missing:
            return out if packed else unpack_masks(out, n_permutable)
        seen.add(fresh, count)
        count += len(fresh)
    raise RuntimeError(  # pragma: no cover - unreachable unless the sampler is broken
        f"random_catalogue did not reach {size} distinct masks in {_MAX_ROUNDS} rounds"
    )


_MIX_1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX_2 = np.uint64(0x94D049BB133111EB)
_HASH_START = np.uint64(0x9E3779B97F4A7C15)


def _row_hash(rows: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each packed row wider than 8 bytes (splitmix64 finaliser per word).

    Why: such rows cannot be one exact integer key, and keeping their words sorted would
    cost more memory than the rows themselves. Equal rows always hash equal; the rare equal
    hash of different rows is told apart by comparing the rows (:meth:`_SeenRows.first_new`),
    so the hash only has to spread rows, never to be collision-free.
    """
    words = _packed_row_words(rows)
    h = np.full(len(rows), _HASH_START, dtype=np.uint64)
    for j in range(words.shape[1]):
        h ^= words[:, j]
        h ^= h >> np.uint64(30)
        h *= _MIX_1
        h ^= h >> np.uint64(27)
        h *= _MIX_2
        h ^= h >> np.uint64(31)
    return h


class _SeenRows:
    """The distinct rows accepted so far, as a sorted array of their keys.

    Why: re-deduplicating everything accepted so far each round made building 10^7 motifs
    quadratic in the number of rounds and held several copies of the catalogue. A round now
    only sorts its own batch and binary-searches the sorted keys of earlier rounds. Rows of
    at most 8 bytes (N <= 64) are their own exact integer keys; wider rows are keyed by
    :func:`_row_hash`, with the row's index in ``accepted`` alongside so a hash match can be
    checked against the row itself.
    """

    def __init__(self, accepted: np.ndarray) -> None:
        self._accepted = accepted
        self._exact = accepted.shape[1] <= 8
        key_dtype = _packed_row_keys(accepted[:0]).dtype if self._exact else np.uint64
        index_dtype = np.uint32 if len(accepted) <= np.iinfo(np.uint32).max else np.intp
        # Room for a key per accepted row, filled in place (np.empty: pages cost RSS only
        # once written), so a merge never holds a second full-size copy of the keys.
        self._key_buf = np.empty(len(accepted), dtype=key_dtype)
        self._index_buf = np.empty(0 if self._exact else len(accepted), dtype=index_dtype)
        self._n = 0
        # Sorted keys of the last batch's new rows and their insertion points, for add().
        self._pending: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def first_new(self, batch: np.ndarray) -> np.ndarray:
        """Indices (ascending) of the first occurrence in ``batch`` of each row not seen yet."""
        if self._exact:
            order, ordered = _first_of_each_key(_packed_row_keys(batch))
            pos = np.searchsorted(self._keys, ordered)
            if len(self._keys):
                new = self._keys[np.minimum(pos, len(self._keys) - 1)] != ordered
                order, ordered, pos = order[new], ordered[new], pos[new]
            self._pending = (ordered, pos, order)
            return np.sort(order)

        first = _unique_packed_rows(batch)
        hashes = _row_hash(batch[first])
        by_hash = np.argsort(hashes, kind="stable")
        ordered = hashes[by_hash]
        pos = np.searchsorted(self._keys, ordered)
        if len(self._keys):
            at = np.minimum(pos, len(self._keys) - 1)
            match = np.flatnonzero(self._keys[at] == ordered)
            rows = batch[first[by_hash[match]]]
            same = (self._accepted[self._index[at[match]]] == rows).all(axis=1)
            seen = np.zeros(len(ordered), dtype=bool)
            seen[match[same]] = True
            for i in match[~same]:  # a true 64-bit collision: check every row with that hash
                end = np.searchsorted(self._keys, ordered[i], side="right")
                stored = self._accepted[self._index[pos[i] : end]]
                seen[i] = bool((stored == batch[first[by_hash[i]]]).all(axis=1).any())
            by_hash, ordered, pos = by_hash[~seen], ordered[~seen], pos[~seen]
        self._pending = (ordered, pos, first[by_hash])
        return np.sort(first[by_hash])

    def add(self, fresh: np.ndarray, offset: int) -> None:
        """Record the rows :meth:`first_new` just returned (``fresh``), stored from ``offset``."""
        if self._pending is None:
            raise RuntimeError("add() must follow first_new()")
        ordered, pos, rows = self._pending
        self._pending = None
        merged = [(self._key_buf, ordered)]
        if not self._exact:
            # Where each row landed in ``accepted``: its rank among ``fresh`` (draw order).
            index = offset + np.searchsorted(fresh, rows)
            merged.append((self._index_buf, index.astype(self._index_buf.dtype)))
        _insert_sorted(merged, self._n, pos)
        self._n += len(ordered)

    @property
    def _keys(self) -> np.ndarray:
        return self._key_buf[: self._n]

    @property
    def _index(self) -> np.ndarray:
        return self._index_buf[: self._n]


_MERGE_CHUNK = 1 << 18


def _insert_sorted(arrays: list[tuple[np.ndarray, np.ndarray]], n: int, pos: np.ndarray) -> None:
    """``np.insert(buf[:n], pos, values)`` written back into each ``buf`` in place.

    Why: ``np.insert`` returns a new array, so every round held the old and the new keys at
    once (~2x their size at 10^7 motifs). Here each old entry ``i`` moves up by the number of
    insertion points ``<= i``, a chunk at a time from the top, so nothing is overwritten
    before it has moved; value ``j`` then lands at ``pos[j] + j`` (ties keep their order,
    as with ``np.insert``). ``pos`` must be non-decreasing, as from ``np.searchsorted``.
    """
    if len(pos) == 0:
        return
    lowest = int(pos[0])  # entries below the first insertion point stay where they are
    for end in range(n, lowest, -_MERGE_CHUNK):
        start = max(lowest, end - _MERGE_CHUNK)
        src = np.arange(start, end)
        dest = src + np.searchsorted(pos, src, side="right")
        for buf, _ in arrays:
            buf[dest] = buf[start:end].copy()
    at = pos + np.arange(len(pos))
    for buf, values in arrays:
        buf[at] = values


def _random_rotations(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` rotation matrices uniform on SO(3), from normalised Gaussian quaternions."""
    q = rng.standard_normal((n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    w, x, y, z = q.T
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
            np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
            np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
        ],
        axis=1,
    )


def default_radius_range(positions: np.ndarray) -> tuple[float, float]:
    """From the closest-pair distance (a cut that can hold about one atom) to half the
    cluster's diameter (a cut that can hold about half of it, or all from the middle)."""
    pos = _check_positions(positions)
    if pos.shape[0] < 2:
        return (1.0, 1.0)
    dist = squareform(pdist(pos))
    np.fill_diagonal(dist, np.inf)
    nearest = float(dist.min())
    half_diameter = float(dist[np.isfinite(dist)].max()) / 2.0
    return (nearest, max(nearest, half_diameter))


def _check_positions(positions: np.ndarray) -> np.ndarray:
    pos = np.asarray(positions, dtype=float)
    if pos.ndim != 2 or pos.shape[1] != 3 or pos.shape[0] < 1:
        raise ValueError(f"positions must be an (N, 3) array with N >= 1, got {pos.shape}")
    if not np.isfinite(pos).all():
        raise ValueError("positions contain NaN or infinite coordinates")
    return pos


def _cut(
    rng: np.random.Generator,
    pos: np.ndarray,
    n_cuts: int,
    radius_range: tuple[float, float],
    ellipsoids: bool,
) -> np.ndarray:
    """One round of cuts: random centres in the bounding box, random radius and shape."""
    lo, hi = pos.min(axis=0), pos.max(axis=0)
    centres = rng.uniform(lo, hi, size=(n_cuts, 3))
    radii = rng.uniform(radius_range[0], radius_range[1], size=n_cuts)
    semi = np.repeat(radii[:, None], 3, axis=1)
    offsets = pos[None, :, :] - centres[:, None, :]  # (cuts, N, 3)
    if ellipsoids:
        # Half the cuts stay spheres so compact round motifs are not crowded out.
        is_ellipsoid = rng.random(n_cuts) < 0.5
        ratios = rng.uniform(*_ELLIPSOID_RATIO, size=(n_cuts, 3))
        semi = np.where(is_ellipsoid[:, None], semi * ratios, semi)
        rot = _random_rotations(rng, n_cuts)
        offsets = np.einsum("cji,cnj->cni", rot, offsets)  # into each ellipsoid's frame
    return np.sum((offsets / semi[:, None, :]) ** 2, axis=2) <= 1.0


def cookie_cutter_catalogue(
    positions: np.ndarray,
    size: int,
    seed: int,
    radius_range: tuple[float, float] | None = None,
    ellipsoids: bool = True,
) -> np.ndarray:
    """Up to ``size`` distinct, non-empty, spatially compact motifs cut from ``positions``.

    ``positions`` are the permutable atoms (N, 3) in file order. Each cut keeps the atoms
    inside a sphere (or, with ``ellipsoids``, possibly a randomly oriented ellipsoid whose
    semi-axes are the radius times factors in 0.6..1.6) with a centre uniform in the atoms'
    bounding box and a radius uniform in ``radius_range`` (default
    :func:`default_radius_range`). Far fewer distinct compact pieces than ``size`` may exist;
    drawing stops once new cuts keep repeating old ones, and what was found is returned.
    """
    _check_size(size)
    pos = _check_positions(positions)
    if radius_range is None:
        radius_range = default_radius_range(pos)
    r_lo, r_hi = float(radius_range[0]), float(radius_range[1])
    if not (0.0 < r_lo <= r_hi and np.isfinite(r_hi)):
        raise ValueError(f"radius_range must satisfy 0 < min <= max, got {radius_range}")
    rng = np.random.default_rng(seed)
    n_atoms = pos.shape[0]
    max_cuts = max(1, _MAX_CELLS_PER_ROUND // (4 * n_atoms))

    masks = np.zeros((0, n_atoms), dtype=bool)
    stalled = 0
    budget = _MAX_CUTS_PER_MOTIF * size + 1024
    while masks.shape[0] < size and stalled < _STALL_ROUNDS and budget > 0:
        missing = size - masks.shape[0]
        n_cuts = min(max_cuts, budget, 2 * missing + 16)  # empties and repeats are common
        budget -= n_cuts
        batch = _cut(rng, pos, n_cuts, (r_lo, r_hi), ellipsoids)
        batch = batch[batch.any(axis=1)]
        merged = np.concatenate([masks, batch])
        merged = merged[unique_row_indices(merged)]
        stalled = stalled + 1 if merged.shape[0] == masks.shape[0] else 0
        masks = merged
    if masks.shape[0] < size:
        logger.warning(
            "cookie cutter found only %d distinct motifs (asked for %d) with radii %.3g-%.3g",
            masks.shape[0],
            size,
            r_lo,
            r_hi,
        )
    return masks[:size]
