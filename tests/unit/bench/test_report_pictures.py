"""The benchmark report's strategy table and pictures, from the committed results."""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from hybridcache_dev.bench import report
from hybridcache_dev.bench.plots import cdf_points, write_plots
from hybridcache_dev.bench.stats import QUANTILE_LEVELS, summarize

pytestmark = pytest.mark.timeout(120)

RESULTS = Path(__file__).resolve().parents[3] / "docs" / "bench-results"


def test_strategy_table_puts_the_seed_claims_beside_the_measured_figures() -> None:
    strategy = next(g for g in report.load_groups(RESULTS) if g["group"] == "strategy")
    text = report.render([strategy])
    # The seed's claims beside whatever the committed run measured (its figures change per run).
    storage = (
        r"\| storage \| 100% \| [\d.]+ MB \(100%\) \| 20% \(\"90% less\"\) "
        r"\| [\d.]+ MB \(\d+%\) \| 5% \| [\d.]+ MB \(\d+%\) \|"
    )
    assert re.search(storage, text), "the storage row lacks the seed's claims or the measured figures"
    for row in ("| network |", "| read latency |", "| Wrapper calls per 1,000 reads |", "| staleness |"):
        assert row in text, f"the strategy table lacks the row {row}"
    assert "{'rss_at_start'" not in text, "the strategies must not be printed as raw dicts"


PICTURES = ("latency", "latency-cdf", "propagation", "propagation-cdf", "strategy")


def copy_results(into: Path) -> Path:
    into.mkdir(exist_ok=True)
    for path in RESULTS.glob("*.json"):
        shutil.copy(path, into / path.name)
    return into


def test_pictures_are_drawn_from_the_committed_results(tmp_path: Path) -> None:
    copy_results(tmp_path)
    written = {path.name for path in write_plots(tmp_path)}
    expected = {f"{name}.{ext}" for name in PICTURES for ext in ("png", "svg")}
    assert written == expected
    for name in expected:
        data = (tmp_path / name).read_bytes()
        assert len(data) > 5_000, f"{name} is suspiciously small ({len(data)} bytes)"
        assert data.startswith(b"\x89PNG") if name.endswith(".png") else b"<svg" in data[:2000]


def test_the_same_results_draw_the_same_bytes(tmp_path: Path) -> None:
    """matplotlib's SVG ids are random and its files dated unless told otherwise: redrawn
    pictures would then change in git at every `make bench` though no figure did."""
    first, second = copy_results(tmp_path / "a"), copy_results(tmp_path / "b")
    written = write_plots(first)
    write_plots(second)
    for path in written:
        again = second / path.name
        assert path.read_bytes() == again.read_bytes(), (
            f"{path.name} differs between two draws of the same JSON"
        )
    svg = (first / "latency.svg").read_text()
    assert "<dc:date>" not in svg, "the SVG carries a date"


def with_distribution(figure: dict[str, Any], samples_ns: list[int]) -> dict[str, Any]:
    return {**figure, "quantiles_us": summarize(samples_ns, seconds=1.0).quantiles_json()}


def test_cdfs_use_the_kept_distribution_and_old_results_their_two_percentiles() -> None:
    old = {"name": "x", "samples": 10_200, "p50_us": 600.0, "p99_us": 1100.0, "max_us": 5000.0}
    points, whole = cdf_points(old)
    assert (points, whole) == ([(0.5, 0.6), (0.99, 1.1)], False)
    kept = with_distribution(old, [1000 * i for i in range(1, 10_001)])  # 1 µs .. 10 ms
    points, whole = cdf_points(kept)
    assert whole
    assert len(points) == len(QUANTILE_LEVELS)
    assert points[0] == pytest.approx((0.001, 0.01))
    assert points[-1] == pytest.approx((0.999, 9.99), rel=1e-3)
    assert [ms for _, ms in points] == sorted(ms for _, ms in points), "a CDF never goes down"


def test_pictures_draw_results_that_keep_distributions(tmp_path: Path) -> None:
    copy_results(tmp_path)
    rng = random.Random(18)
    for path in tmp_path.glob("*.json"):
        data = json.loads(path.read_text())
        for index, figure in enumerate(data.get("figures", [])):
            scale = figure["p50_us"] * 1000
            samples = [int(scale * rng.lognormvariate(0, 0.3)) + 1 for _ in range(2_000)]
            data["figures"][index] = with_distribution(figure, samples)
        path.write_text(json.dumps(data))
    written = {path.name for path in write_plots(tmp_path)}
    assert {f"{name}.svg" for name in PICTURES} <= written
