"""Percentiles and summaries of latency samples; the median of repeated runs.

Pure functions over plain lists (numpy is not a dependency). Percentiles use the
nearest-rank definition: the reported p99 is a latency some call really had, never an
interpolation between two calls.

A summary also keeps the samples' distribution as a fixed list of quantiles (QUANTILE_LEVELS):
enough points to draw a CDF and its tail (bench/plots.py), about 500 bytes of JSON a figure
where the samples would be ~100 KB. A figure's JSON carries it as `quantiles_us`; per-run
summaries and results written before it do not.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

from hybridcache_dev.harness.percentiles import percentile

MIN_SAMPLES = 10_000  # the issue asks p50 / p99 from at least this many samples

# Percent levels of the distribution kept per figure: the body every 10 %, the tail closer
# (a CDF on a logit axis spaces 90, 99 and 99.9 evenly). 99.9 of >= 10k samples is still
# over 10 calls; the maximum is `max_us`.
QUANTILE_LEVELS: tuple[float, ...] = (0.1, 1, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 98, 99, 99.5, 99.9)


@dataclass(frozen=True, slots=True)
class Summary:
    """One run of one figure. Latencies in microseconds."""

    samples: int
    p50_us: float
    p99_us: float
    max_us: float
    throughput_per_s: float
    errors: int = 0
    quantiles_us: tuple[float, ...] = ()  # at QUANTILE_LEVELS; () when not known

    def to_json(self) -> dict[str, Any]:
        """The summary's fields as before distributions were kept (see `quantiles_json`)."""
        values = asdict(self)
        del values["quantiles_us"]
        return values

    def quantiles_json(self) -> dict[str, float]:
        """{"p0.1": µs, ..., "p99.9": µs}; empty when the distribution is not known."""
        if not self.quantiles_us:
            return {}
        return {f"p{level:g}": value for level, value in zip(QUANTILE_LEVELS, self.quantiles_us, strict=True)}


def quantiles_from_json(figure: dict[str, Any]) -> list[tuple[float, float]]:
    """(percent, µs) of a figure's JSON `quantiles_us`, by level; [] for results without it."""
    kept = figure.get("quantiles_us") or {}
    return sorted((float(key.removeprefix("p")), float(value)) for key, value in kept.items())


def summarize(latencies_ns: Sequence[int], *, seconds: float, errors: int = 0) -> Summary:
    """Summary of one run: latency percentiles, the distribution at QUANTILE_LEVELS, and calls
    completed per second of measuring."""
    ordered = sorted(latencies_ns)
    if not ordered:
        raise ValueError("no samples")
    return Summary(
        samples=len(ordered),
        p50_us=round(percentile(ordered, 50) / 1000, 1),
        p99_us=round(percentile(ordered, 99) / 1000, 1),
        max_us=round(ordered[-1] / 1000, 1),
        throughput_per_s=round(len(ordered) / seconds, 1) if seconds > 0 else 0.0,
        errors=errors,
        # percentile() re-sorts: on sorted samples that is one linear pass a level
        quantiles_us=tuple(round(percentile(ordered, level) / 1000, 1) for level in QUANTILE_LEVELS),
    )


def median_of(runs: Sequence[Summary]) -> Summary:
    """Field by field median of repeated runs (each field on its own: the median p99 is the
    middle run's p99, which is what 'median of 3 runs' means for a percentile). The
    distribution likewise, level by level, when every run has one (still a CDF: the median
    is monotonic in each run's value)."""
    if not runs:
        raise ValueError("no runs")
    values: dict[str, Any] = {}
    for field in fields(Summary):
        if field.name == "quantiles_us":
            continue
        column = [getattr(run, field.name) for run in runs]
        middle = statistics.median(column)
        values[field.name] = int(middle) if field.type in ("int", int) else round(float(middle), 1)
    if all(run.quantiles_us for run in runs):
        values["quantiles_us"] = tuple(
            round(float(statistics.median(level)), 1)
            for level in zip(*(run.quantiles_us for run in runs), strict=True)
        )
    return Summary(**values)


def ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator rounded to 2 places; inf when the denominator is 0."""
    if denominator == 0:
        return math.inf
    return round(numerator / denominator, 2)
