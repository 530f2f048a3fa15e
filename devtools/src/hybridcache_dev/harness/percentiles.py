"""The one percentile definition of the project's figures (benchmarks, fault scenarios,
scale-out and security measurements; docs/BENCHMARKS.md says what it means).

Nearest rank: the p-th percentile of n samples is the smallest sample with at least p % of
the samples at or below it, i.e. the ceil(p / 100 * n)-th smallest. It is always one of the
samples (never an interpolation), so "p99 = 4.41 s" names a latency that was observed, and
the p100 is the maximum.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from fractions import Fraction


def percentile(values: Iterable[float], p: float) -> float:
    """Nearest-rank percentile `p` (0 < p <= 100) of `values` (any order); NaN for no values,
    so a figure with no samples shows as nan instead of failing the report that holds it."""
    if not 0 < p <= 100:
        raise ValueError(f"percentile must be in (0, 100], not {p}")
    ordered = sorted(values)
    if not ordered:
        return math.nan
    # Exact: as floats, 99.9 / 100 * 10_000 is 9990.000000000002, one rank too high.
    rank = math.ceil(Fraction(str(p)) * len(ordered) / 100)
    return float(ordered[rank - 1])
