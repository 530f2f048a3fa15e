"""Selection for the scale-out tests.

* the default run (`scripts/test`, `pytest`) runs the lean ones: client failover across
  3 replicas, the snapshot cap, the Sentinel failover of one replica, workers, Cluster;
* `make scaleout` (`-m scaleout`) runs only the measurements (10-replica stampede figures,
  the 3-replica + Sentinel "done" run with its convergence bound, the workers' throughput).

Items marked `scaleout` are deselected (not skipped) unless `-m` selects `scaleout`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    markexpr = str(config.getoption("markexpr") or "")
    wanted = "scaleout" in markexpr and "not scaleout" not in markexpr
    keep: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        if (
            HERE not in Path(str(item.fspath)).resolve().parents
            or (item.get_closest_marker("scaleout") is not None) == wanted
        ):
            keep.append(item)
        else:
            dropped.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep
