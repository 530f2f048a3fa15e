"""The benchmark's statistics: summaries, median of runs (percentiles: tests/unit/harness)."""

from __future__ import annotations

import json
import math

import pytest

from hybridcache_dev.bench.stats import (
    QUANTILE_LEVELS,
    Summary,
    median_of,
    quantiles_from_json,
    ratio,
    summarize,
)


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


# --- the distribution kept per figure (quantiles at QUANTILE_LEVELS)


def test_summarize_keeps_the_distribution_at_the_quantile_levels() -> None:
    summary = summarize([1000 * i for i in range(1000, 0, -1)], seconds=1.0)  # 1..1000 µs
    kept = summary.quantiles_json()
    assert list(kept) == [f"p{level:g}" for level in QUANTILE_LEVELS]
    assert (kept["p0.1"], kept["p10"], kept["p90"]) == (1.0, 100.0, 900.0)
    assert (kept["p50"], kept["p99"]) == (summary.p50_us, summary.p99_us), "one percentile definition"
    assert list(kept.values()) == sorted(kept.values())


def test_median_of_runs_takes_the_distribution_level_by_level() -> None:
    runs = [summarize([base * 1000 * i for i in range(1, 101)], seconds=1.0) for base in (1, 3, 2)]
    middle = median_of(runs)
    assert middle.quantiles_us == runs[2].quantiles_us  # base 2: every level's middle run
    no_distribution = Summary(samples=1, p50_us=1.0, p99_us=1.0, max_us=1.0, throughput_per_s=1.0)
    assert median_of([*runs, no_distribution]).quantiles_us == (), "a run without one: none is made up"


def test_the_json_keeps_one_distribution_per_figure_not_per_run() -> None:
    from hybridcache_dev.bench.suite import Figure, pooled

    samples = [[1000 * i for i in range(1, 3401)] for _ in range(3)]
    runs = [summarize(run, seconds=1.0) for run in samples]
    figure = Figure("f", pooled(samples, runs), runs).to_json()
    assert (
        figure["quantiles_us"] == summarize([s for run in samples for s in run], seconds=1).quantiles_json()
    )
    assert all("quantiles_us" not in run for run in figure["runs"])
    assert runs[0].to_json().keys() == {"samples", "p50_us", "p99_us", "max_us", "throughput_per_s", "errors"}
    size = len(json.dumps(figure["quantiles_us"], indent=2))
    assert size < 600, f"the distribution costs {size} bytes of committed JSON a figure"


def test_results_written_before_distributions_load_without_one() -> None:
    from hybridcache_dev.bench.suite import Figure

    old = {"name": "x", "samples": 10, "p50_us": 1.0, "p99_us": 2.0, "max_us": 3.0, "throughput_per_s": 1.0}
    assert quantiles_from_json(old) == []
    summary = Summary(samples=10, p50_us=1.0, p99_us=2.0, max_us=3.0, throughput_per_s=1.0)
    assert "quantiles_us" not in Figure("x", summary, [summary]).to_json()
    new = {**old, "quantiles_us": {"p50": 1.0, "p0.1": 0.5, "p99.9": 2.5}}
    assert quantiles_from_json(new) == [(0.1, 0.5), (50.0, 1.0), (99.9, 2.5)]
