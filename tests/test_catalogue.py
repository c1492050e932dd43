"""Motif catalogues: the generators must reproduce the paper's sampling (uniform motif size,
no repeats, seeded), and catalogues must survive a round trip to disk bit-for-bit."""

from __future__ import annotations

from math import comb
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.spatial.distance import pdist
from scipy.stats import chi2

from motex_stream.catalogue import (
    Catalogue,
    CatalogueFileError,
    cookie_cutter_catalogue,
    dedupe_masks,
    default_radius_range,
    pack_masks,
    random_catalogue,
    unpack_masks,
)

KEGGIN_110457 = Path(__file__).resolve().parents[1] / "motex_stream/data/keggin/110457.xyz"


def _distinct(masks: np.ndarray) -> int:
    return len({row.tobytes() for row in masks})


@pytest.fixture(scope="module")
def w_positions() -> np.ndarray:
    """The 48 W atoms of 110457.xyz (the first 48 atoms of the file)."""
    lines = KEGGIN_110457.read_text().splitlines()
    atoms = [line.split() for line in lines[2 : 2 + int(lines[0])]]
    w = [[float(v) for v in a[1:4]] for a in atoms[:48]]
    assert all(a[0] == "W" for a in atoms[:48])
    return np.array(w)


# ---------------------------------------------------------------- random_catalogue


def test_random_catalogue_shape_dtype_and_reproducible() -> None:
    a = random_catalogue(24, 2000, seed=7)
    b = random_catalogue(24, 2000, seed=7)
    assert a.shape == (2000, 24)
    assert a.dtype == bool
    np.testing.assert_array_equal(a, b)


def test_random_catalogue_different_seeds_differ() -> None:
    a = random_catalogue(24, 500, seed=1)
    b = random_catalogue(24, 500, seed=2)
    assert not np.array_equal(a, b)
    # Outside the tiny classes (1, 2, 22, 23, 24 kept atoms, which every sample revisits),
    # two independent samples of 500 out of ~16.7 M masks essentially never overlap.
    mid_a = a[(a.sum(axis=1) >= 4) & (a.sum(axis=1) <= 20)]
    mid_b = b[(b.sum(axis=1) >= 4) & (b.sum(axis=1) <= 20)]
    assert len(mid_a) > 300
    assert _distinct(np.concatenate([mid_a, mid_b])) >= len(mid_a) + len(mid_b) - 1


def test_random_catalogue_rows_are_unique_and_non_empty() -> None:
    masks = random_catalogue(24, 10_000, seed=0)
    assert _distinct(masks) == 10_000
    assert masks.sum(axis=1).min() >= 1


def test_random_catalogue_size_distribution_is_uniform() -> None:
    n = 24
    sizes = random_catalogue(n, 10_000, seed=3).sum(axis=1)
    counts = np.bincount(sizes, minlength=n + 1)
    # The smallest and largest classes hold only C(24, k) < 2,100 distinct masks, so dedupe
    # thins them out; between 4 and 20 kept atoms repeats are rare and the draw is uniform.
    middle = counts[4:21]
    expected = np.full(middle.size, middle.sum() / middle.size)
    stat = float(((middle - expected) ** 2 / expected).sum())
    assert stat < chi2.ppf(0.999, df=middle.size - 1)
    # And the uniform draw really reaches the extremes (a Bernoulli(0.5) draw per atom would
    # give ~0 motifs with 1 or 23 atoms in 10,000).
    assert counts[1] >= 20
    assert counts[23] >= 20


def test_random_catalogue_respects_count_bounds() -> None:
    masks = random_catalogue(30, 3000, seed=5, lower=5, upper=9)
    sizes = masks.sum(axis=1)
    assert sizes.min() == 5
    assert sizes.max() == 9
    assert set(np.unique(sizes)) == {5, 6, 7, 8, 9}


@pytest.mark.parametrize(
    ("n", "lower", "upper", "size"),
    [(24, -1, None, 10), (24, 1, 25, 10), (24, 10, 9, 10), (24, 1, None, 0), (0, 0, None, 1)],
)
def test_random_catalogue_rejects_bad_arguments(
    n: int, lower: int, upper: int | None, size: int
) -> None:
    with pytest.raises(ValueError):
        random_catalogue(n, size, seed=0, lower=lower, upper=upper)


def test_random_catalogue_exhausts_small_n() -> None:
    masks = random_catalogue(4, 100, seed=0)
    assert masks.shape == (15, 4)
    assert _distinct(masks) == 15
    assert masks.any(axis=1).all()
    # Exactly the number of masks that exist also comes back complete.
    assert _distinct(random_catalogue(4, 15, seed=1)) == 15


def test_random_catalogue_exhausts_within_count_range() -> None:
    masks = random_catalogue(6, 1000, seed=0, lower=2, upper=3)
    assert masks.shape == (comb(6, 2) + comb(6, 3), 6)
    assert set(masks.sum(axis=1)) == {2, 3}


def test_random_catalogue_tiny_n_partial() -> None:
    masks = random_catalogue(3, 5, seed=4)
    assert masks.shape == (5, 3)
    assert _distinct(masks) == 5


def test_random_catalogue_near_exhaustion_still_unique() -> None:
    total = 2**12 - 1
    masks = random_catalogue(12, total - 3, seed=9)
    assert _distinct(masks) == total - 3


# ---------------------------------------------------------------- cookie cutter


def test_default_radius_range_on_keggin(w_positions: np.ndarray) -> None:
    r_min, r_max = default_radius_range(w_positions)
    d = pdist(w_positions)
    assert r_min == pytest.approx(d.min())
    assert r_max == pytest.approx(d.max() / 2)
    assert 3.0 < r_min < 4.0  # W-W in a Keggin unit is ~3.3-3.7 Å


def test_cookie_cutter_spheres_are_compact(w_positions: np.ndarray) -> None:
    r_range = (3.5, 6.0)
    masks = cookie_cutter_catalogue(
        w_positions, 300, seed=0, radius_range=r_range, ellipsoids=False
    )
    assert masks.shape[1] == 48
    assert 50 < masks.shape[0] <= 300
    assert masks.any(axis=1).all()
    assert _distinct(masks) == masks.shape[0]
    for mask in masks:
        kept = w_positions[mask]
        if len(kept) > 1:
            assert pdist(kept).max() <= 2 * r_range[1] + 1e-9
    # The cuts really are local: none of them keeps the whole 48-atom cluster's extent.
    assert max(pdist(w_positions[m]).max() for m in masks if m.sum() > 1) < pdist(w_positions).max()


def test_cookie_cutter_ellipsoids_are_bounded_by_longest_axis(w_positions: np.ndarray) -> None:
    r_range = (4.0, 5.0)
    masks = cookie_cutter_catalogue(w_positions, 300, seed=1, radius_range=r_range)
    assert masks.any(axis=1).all()
    for mask in masks:
        kept = w_positions[mask]
        if len(kept) > 1:
            assert pdist(kept).max() <= 2 * 1.6 * r_range[1] + 1e-9


def test_cookie_cutter_radius_controls_motif_size(w_positions: np.ndarray) -> None:
    small = cookie_cutter_catalogue(w_positions, 200, seed=2, radius_range=(3.4, 4.0))
    large = cookie_cutter_catalogue(w_positions, 200, seed=2, radius_range=(9.0, 10.0))
    assert large.sum(axis=1).mean() > 2 * small.sum(axis=1).mean()


def test_cookie_cutter_reproducible_and_seed_dependent(w_positions: np.ndarray) -> None:
    a = cookie_cutter_catalogue(w_positions, 500, seed=11)
    b = cookie_cutter_catalogue(w_positions, 500, seed=11)
    c = cookie_cutter_catalogue(w_positions, 500, seed=12)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.shape == (500, 48)


def test_cookie_cutter_returns_what_exists_for_tiny_model() -> None:
    # Three atoms on a line: contiguous pieces only, and {0, 2} without 1 is impossible
    # for a sphere centred in the bounding box that keeps both ends.
    line = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [2.0, 0.0, 0.0]])
    masks = cookie_cutter_catalogue(line, 50, seed=0, radius_range=(0.3, 1.2), ellipsoids=False)
    rows = {tuple(int(v) for v in m) for m in masks}
    assert (1, 0, 1) not in rows
    assert rows <= {(1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0), (0, 1, 1), (1, 1, 1)}
    assert len(rows) >= 4


def test_cookie_cutter_rejects_bad_input(w_positions: np.ndarray) -> None:
    with pytest.raises(ValueError):
        cookie_cutter_catalogue(w_positions, 0, seed=0)
    with pytest.raises(ValueError):
        cookie_cutter_catalogue(w_positions[:, :2], 10, seed=0)
    with pytest.raises(ValueError):
        cookie_cutter_catalogue(w_positions, 10, seed=0, radius_range=(5.0, 2.0))


# ---------------------------------------------------------------- storage


@settings(max_examples=60, deadline=None)
@given(
    st.integers(min_value=1, max_value=140).flatmap(
        lambda n: arrays(bool, st.tuples(st.integers(0, 30), st.just(n)))
    )
)
def test_pack_unpack_round_trip(masks: np.ndarray) -> None:
    packed = pack_masks(masks)
    assert packed.dtype == np.uint8
    assert packed.shape == (masks.shape[0], (masks.shape[1] + 7) // 8)
    np.testing.assert_array_equal(unpack_masks(packed, masks.shape[1]), masks)


def test_pack_rejects_non_binary_values() -> None:
    with pytest.raises(ValueError):
        pack_masks(np.array([[0, 2, 1]]))
    with pytest.raises(ValueError):
        unpack_masks(np.zeros((2, 3), dtype=np.uint8), 30)


def test_dedupe_keeps_first_occurrences_in_order() -> None:
    masks = np.array([[1, 0, 1], [0, 1, 0], [1, 0, 1], [1, 1, 1], [0, 1, 0]], dtype=bool)
    np.testing.assert_array_equal(dedupe_masks(masks), masks[[0, 1, 3]])
    cat = Catalogue(masks, "manual", 0).dedupe()
    assert cat.n_motifs == 3
    assert cat.n_permutable == 3


def test_catalogue_save_load_round_trip(tmp_path: Path) -> None:
    masks = random_catalogue(37, 1234, seed=42)
    path = tmp_path / "cat.npz"
    Catalogue(masks, "random", 42).save(path)
    back = Catalogue.load(path)
    np.testing.assert_array_equal(back.masks, masks)
    assert back.masks.dtype == bool
    assert (back.generator, back.seed, back.n_permutable, len(back)) == ("random", 42, 37, 1234)
    # The file is packed: 5 bytes per 37-bit row before compression, not 37.
    assert path.stat().st_size < masks.size // 4


def test_catalogue_is_immutable() -> None:
    cat = Catalogue(np.eye(3, dtype=int), "manual", 0)
    assert cat.masks.dtype == bool
    with pytest.raises(ValueError):
        cat.masks[0, 0] = False


def test_catalogue_load_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.npz"
    with pytest.raises(FileNotFoundError, match=r"nope\.npz"):
        Catalogue.load(missing)
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"this is not a zip archive")
    with pytest.raises(CatalogueFileError, match=r"corrupt\.npz"):
        Catalogue.load(corrupt)
    wrong = tmp_path / "wrong.npz"
    np.savez_compressed(wrong, something=np.arange(3))
    with pytest.raises(CatalogueFileError, match=r"wrong\.npz"):
        Catalogue.load(wrong)


@pytest.mark.parametrize(("n", "size", "seed"), [(24, 3000, 0), (80, 40_000, 1), (5, 100, 2)])
def test_packed_random_catalogue_is_the_same_rows_packed(n, size, seed):
    """packed=True gives exactly pack_masks of the bool catalogue (same draws, same order);
    the bool rows themselves were checked identical to the former bool-accumulating
    implementation for 24-240 atoms and 3-300,000 motifs when the packed one replaced it."""
    bools = random_catalogue(n, size, seed)
    packed = random_catalogue(n, size, seed, packed=True)
    assert packed.dtype == np.uint8 and packed.shape == (len(bools), (n + 7) // 8)
    np.testing.assert_array_equal(packed, pack_masks(bools))
    assert len(dedupe_masks(bools)) == len(bools)


def test_iter_unpacked_streams_a_packed_catalogue_in_chunks():
    from motex_stream.catalogue.storage import iter_unpacked

    masks = random_catalogue(21, 1000, 3)
    packed = pack_masks(masks)
    chunks = list(iter_unpacked(packed, 21, 300))
    assert [start for start, _ in chunks] == [0, 300, 600, 900]
    assert [len(c) for _, c in chunks] == [300, 300, 300, 100]
    np.testing.assert_array_equal(np.vstack([c for _, c in chunks]), masks)
    with pytest.raises(ValueError, match="chunk"):
        next(iter_unpacked(packed, 21, 0))


# ------------------------------------------- random_catalogue against the original algorithm


def _void_first_occurrences(packed: np.ndarray) -> np.ndarray:
    """The original dedupe, written out: np.unique over whole-row void keys, first indices."""
    packed = np.ascontiguousarray(packed)
    if packed.shape[0] == 0:
        return np.zeros(0, dtype=np.intp)
    if packed.shape[1] == 0:
        return np.zeros(1, dtype=np.intp)
    keys = packed.view(np.dtype((np.void, packed.shape[1]))).ravel()
    _, first = np.unique(keys, return_index=True)
    return np.sort(first)


def _reference_random_catalogue(
    n: int, size: int, seed: int, lower: int = 1, upper: int | None = None
) -> np.ndarray:
    """random_catalogue as first written (packed rows): every round concatenates all rows so
    far with the new batch and re-deduplicates the lot. The draws are the module's own, and
    its round-size constants are read at call time, so a monkeypatch applies to both."""
    from motex_stream.catalogue import generators as gen

    upper = n if upper is None else upper
    rng = np.random.default_rng(seed)
    total = sum(comb(n, k) for k in range(lower, upper + 1))
    if total <= size:
        return pack_masks(gen._all_masks(n, lower, upper)[rng.permutation(total)])
    rows = np.zeros((0, (n + 7) // 8), dtype=np.uint8)
    max_rows = max(1, gen._MAX_CELLS_PER_ROUND // n)
    while rows.shape[0] < size:
        missing = size - rows.shape[0]
        n_rows = min(max_rows, max(missing + missing // 8 + 16, gen._MIN_ROWS_PER_ROUND))
        merged = np.concatenate([rows, gen._draw_random_packed(rng, n_rows, n, lower, upper)])
        rows = merged[_void_first_occurrences(merged)]
    return rows[:size]


def _bounds(n: int) -> list[tuple[int, int | None]]:
    """Default, tight low and tight high count ranges (the tight ones repeat masks a lot)."""
    out: list[tuple[int, int | None]] = [(1, None)]
    if n >= 3:
        out += [(1, 2), (n - 2, n - 1)]
    return out


def _sizes(n: int, lower: int, upper: int | None) -> list[int]:
    total = sum(comb(n, k) for k in range(lower, (n if upper is None else upper) + 1))
    sizes = {1, 9, min(total - 1, 700), min(total - 2, 1500)}
    if total <= 3000:  # every mask fits: the all-masks branch
        sizes |= {total, total + 5}
    return sorted(s for s in sizes if s >= 1)


_NS = (1, 5, 8, 9, 24, 64, 65, 80, 240)


@pytest.mark.parametrize("n", _NS)
def test_random_catalogue_matches_original_algorithm_with_tiny_rounds(n, monkeypatch):
    """Byte-identical to the concatenate-and-re-dedupe original over many small rounds, so
    repeats across rounds (not just within one batch) are what gets dropped."""
    from motex_stream.catalogue import generators as gen

    monkeypatch.setattr(gen, "_MAX_CELLS_PER_ROUND", 1500)
    monkeypatch.setattr(gen, "_MIN_ROWS_PER_ROUND", 1)
    monkeypatch.setattr(gen, "_MERGE_CHUNK", 7)  # the in-place key merge, chunk by chunk
    for lower, upper in _bounds(n):
        for size in _sizes(n, lower, upper):
            for seed in (0, 11):
                want = _reference_random_catalogue(n, size, seed, lower, upper)
                got = random_catalogue(n, size, seed, lower, upper, packed=True)
                assert got.dtype == np.uint8 and got.shape == want.shape, (n, size, lower)
                assert got.tobytes() == want.tobytes(), (n, size, seed, lower, upper)
                bools = random_catalogue(n, size, seed, lower, upper)
                np.testing.assert_array_equal(bools, unpack_masks(want, n))


@pytest.mark.parametrize(("n", "size"), [(9, 400), (24, 30_000), (65, 20_000), (240, 100_000)])
def test_random_catalogue_matches_original_algorithm_with_default_rounds(n, size):
    """The shipped round sizes too; 100,000 motifs over 240 atoms take two rounds."""
    want = _reference_random_catalogue(n, size, 5)
    assert random_catalogue(n, size, 5, packed=True).tobytes() == want.tobytes()


@pytest.mark.parametrize("n", [65, 80, 240])
def test_random_catalogue_exact_despite_row_hash_collisions(n, monkeypatch):
    """Rows wider than 8 bytes are looked up by a 64-bit hash; a hash that collides all the
    time (byte sum mod 5) must still give exactly the original rows, since every hash match
    is checked against the stored row."""
    from motex_stream.catalogue import generators as gen

    monkeypatch.setattr(gen, "_MAX_CELLS_PER_ROUND", 4000)
    monkeypatch.setattr(gen, "_MIN_ROWS_PER_ROUND", 1)
    monkeypatch.setattr(gen, "_MERGE_CHUNK", 5)
    monkeypatch.setattr(
        gen, "_row_hash", lambda rows: rows.sum(axis=1, dtype=np.uint64) % np.uint64(5)
    )
    for lower, upper, size in [(1, None, 600), (1, 2, 2000), (n - 2, n - 1, 1200)]:
        want = _reference_random_catalogue(n, size, 3, lower, upper)
        got = random_catalogue(n, size, 3, lower, upper, packed=True)
        assert got.tobytes() == want.tobytes(), (n, lower, upper, size)


@settings(max_examples=150, deadline=None)
@given(
    arrays(
        np.uint8,
        st.tuples(st.integers(0, 40), st.integers(0, 19)),
        elements=st.sampled_from([0, 1, 128, 255]),
    )
)
def test_unique_packed_rows_match_void_unique(packed: np.ndarray) -> None:
    """Integer-keyed dedupe (one key up to 8 bytes, uint64 words beyond) keeps exactly the
    first occurrences np.unique finds over void rows, in order."""
    from motex_stream.catalogue.storage import _unique_packed_rows

    np.testing.assert_array_equal(_unique_packed_rows(packed), _void_first_occurrences(packed))
