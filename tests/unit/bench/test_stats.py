"""The benchmark's statistics: summaries, median of runs (percentiles: tests/unit/harness)."""

from __future__ import annotations

import math

import pytest

from hybridcache_dev.bench.stats import Summary, median_of, ratio, summarize


def test_summarize_rejects_no_samples() -> None:
    with pytest.raises(ValueError, match="no samples"):
        summarize([], seconds=1.0)


def test_summarize_converts_ns_to_us_and_counts_throughput() -> None:
    latencies = [1000 * i for i in range(1, 1001)]  # 1..1000 µs, unsorted order must not matter
    latencies.reverse()
    summary = summarize(latencies, seconds=2.0, errors=3)
    assert summary.samples == 1000
    assert summary.p50_us == 500.0
    assert summary.p99_us == 990.0
    assert summary.max_us == 1000.0
    assert summary.throughput_per_s == 500.0
    assert summary.errors == 3


def test_median_of_runs_is_per_field() -> None:
    runs = [
        Summary(samples=10, p50_us=1.0, p99_us=9.0, max_us=20.0, throughput_per_s=100.0),
        Summary(samples=30, p50_us=3.0, p99_us=5.0, max_us=10.0, throughput_per_s=300.0),
        Summary(samples=20, p50_us=2.0, p99_us=7.0, max_us=30.0, throughput_per_s=200.0, errors=1),
    ]
    middle = median_of(runs)
    assert middle == Summary(samples=20, p50_us=2.0, p99_us=7.0, max_us=20.0, throughput_per_s=200.0)
    assert isinstance(middle.samples, int)


def test_ratio() -> None:
    assert ratio(3, 2) == 1.5
    assert ratio(1, 3) == 0.33
    assert math.isinf(ratio(1, 0))


def test_pooled_percentiles_over_all_runs_throughput_of_the_median_run() -> None:
    from hybridcache_dev.bench.suite import pooled

    runs = [[1000] * 99 + [100_000], [2000] * 100, [3000] * 100]  # ns
    summaries = [summarize(run, seconds=s) for run, s in zip(runs, (1.0, 2.0, 4.0), strict=True)]
    whole = pooled(runs, summaries)
    assert whole.samples == 300
    assert whole.p50_us == 2.0
    assert whole.p99_us == 3.0
    assert whole.max_us == 100.0
    assert whole.throughput_per_s == 50.0  # the median run: 100 samples in 2 s
