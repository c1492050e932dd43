"""Coverage of the 90 % intervals against the seed-to-seed spread (issue 21, item 3).

The interval of a contribution value should contain the value's expectation over whole
analyses (new catalogue, search, surrogate, ensemble) ~90 % of the time. Here: the off-centre
hcp Co case of the known-truth family (19 of 57 atoms; ``benchmarks/bench_known_truth.py``),
six analysis seeds of the same data at 1,000 motifs with m = 250-motif member resamples and
the default 12-point search; the expectation is estimated by the six-seed mean (deviations
rescaled by sqrt(6/5), the mean holding each seed itself), as
``benchmarks/bench_known_truth_coverage.py`` does. Measured: 299 of 342 (87.4 %), inside the
issue's ±5 points of nominal; the same members' SD scaled from m to n (the rejected
calibration) covers 261 (76 %). On 109725 (10 seeds, 10,000 motifs) the intervals cover 89 %.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():  # the coverage benchmark is the one place coverage is computed
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import bench_known_truth_coverage
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return bench_known_truth_coverage


@pytest.mark.slow
def test_nominal_90_percent_intervals_cover_the_seed_mean_within_5_points(bench) -> None:
    runs = [bench.run_seed("3", seed, 1000, 250, quick=True, search=(12, 5)) for seed in range(6)]
    got = bench.coverage(runs, scaled=False)
    assert got["pairs"] == 6 * 57
    assert 0.85 <= got["coverage"] <= 0.95, got["coverage"]  # measured 0.874
    # scaling the members' spread from the 250-motif resamples to the 1,000-motif catalogue
    # makes the intervals too narrow: the reason they are not scaled
    assert bench.coverage(runs, scaled=True)["coverage"] < 0.85  # measured 0.763
