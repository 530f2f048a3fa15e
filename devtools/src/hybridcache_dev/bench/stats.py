"""Percentiles and summaries of latency samples; the median of repeated runs.

Pure functions over plain lists (numpy is not a dependency). Percentiles use the
nearest-rank definition: the reported p99 is a latency some call really had, never an
interpolation between two calls.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

from hybridcache_dev.harness.percentiles import percentile

MIN_SAMPLES = 10_000  # the issue asks p50 / p99 from at least this many samples


@dataclass(frozen=True, slots=True)
class Summary:
    """One run of one figure. Latencies in microseconds."""

    samples: int
    p50_us: float
    p99_us: float
    max_us: float
    throughput_per_s: float
    errors: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def summarize(latencies_ns: Sequence[int], *, seconds: float, errors: int = 0) -> Summary:
    """Summary of one run: latency percentiles, and calls completed per second of measuring."""
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
    )


def median_of(runs: Sequence[Summary]) -> Summary:
    """Field by field median of repeated runs (each field on its own: the median p99 is the
    middle run's p99, which is what 'median of 3 runs' means for a percentile)."""
    if not runs:
        raise ValueError("no runs")
    values: dict[str, Any] = {}
    for field in fields(Summary):
        column = [getattr(run, field.name) for run in runs]
        middle = statistics.median(column)
        values[field.name] = int(middle) if field.type in ("int", int) else round(float(middle), 1)
    return Summary(**values)


def ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator rounded to 2 places; inf when the denominator is 0."""
    if denominator == 0:
        return math.inf
    return round(numerator / denominator, 2)
