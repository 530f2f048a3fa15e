"""The benchmark report's strategy table and pictures, from the committed results."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from hybridcache_dev.bench import report
from hybridcache_dev.bench.plots import write_plots

pytestmark = pytest.mark.timeout(120)

RESULTS = Path(__file__).resolve().parents[3] / "docs" / "bench-results"


def test_strategy_table_puts_the_seed_claims_beside_the_measured_figures() -> None:
    strategy = next(g for g in report.load_groups(RESULTS) if g["group"] == "strategy")
    text = report.render([strategy])
    assert (
        '| storage | 100% | 33.3 MB (100%) | 20% ("90% less") | 11.8 MB (35%) | 5% | 3.7 MB (11%) |' in text
    )
    for row in ("| network |", "| read latency |", "| Wrapper calls per 1,000 reads |", "| staleness |"):
        assert row in text, f"the strategy table lacks the row {row}"
    assert "{'rss_at_start'" not in text, "the strategies must not be printed as raw dicts"


def test_pictures_are_drawn_from_the_committed_results(tmp_path: Path) -> None:
    for path in RESULTS.glob("*.json"):
        shutil.copy(path, tmp_path / path.name)
    written = {path.name for path in write_plots(tmp_path)}
    expected = {f"{name}.{ext}" for name in ("latency", "propagation", "strategy") for ext in ("png", "svg")}
    assert written == expected
    for name in expected:
        data = (tmp_path / name).read_bytes()
        assert len(data) > 5_000, f"{name} is suspiciously small ({len(data)} bytes)"
        assert data.startswith(b"\x89PNG") if name.endswith(".png") else b"<svg" in data[:2000]
