"""The one percentile definition (hybridcache_dev.harness.percentiles): nearest rank."""

from __future__ import annotations

import math

import pytest

from hybridcache_dev.harness.percentiles import percentile


def test_percentile_nearest_rank() -> None:
    values = list(range(1, 101))  # 1..100
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile(values, 0.5) == 1


def test_percentile_is_always_a_sample() -> None:
    values = [10, 20]
    assert percentile(values, 50) == 10
    assert percentile(values, 51) == 20


@pytest.mark.parametrize("q", [0, -1, 100.5])
def test_percentile_rejects_out_of_range(q: float) -> None:
    with pytest.raises(ValueError, match="percentile"):
        percentile([1], q)


def test_percentile_of_no_samples_is_nan() -> None:
    assert math.isnan(percentile([], 50))


def test_percentile_takes_values_in_any_order() -> None:
    assert percentile([5, 1, 4, 2, 3], 50) == 3
    assert percentile(iter([3.0, 1.0, 2.0]), 100) == 3.0


def test_the_scale_out_definition_differs_no_more() -> None:
    # The scale-out helper took index int(q * n): the 51st of 100 samples for the median,
    # where nearest rank (and every other figure here) takes the 50th.
    assert percentile(range(1, 101), 50) == 50


def test_the_rank_is_exact_not_a_float_product() -> None:
    # 99.9 / 100 * 10_000 is 9990.000000000002 in floating point: its ceiling took the
    # 9,991st sample where nearest rank says the 9,990th (every p99.9 of n = k x 1,000).
    assert percentile(range(1, 10_001), 99.9) == 9990
    assert percentile(range(1, 2_001), 99.9) == 1998
    assert percentile(range(1, 10_001), 99.99) == 9999
