"""Selection: items marked `image` (build the container image and run it: minutes, root,
podman) run only when `-m image` selects them (`make image-test`); the quick checks of the
image's files in this folder run in the default run."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    markexpr = str(config.getoption("markexpr") or "")
    wanted = "image" in markexpr and "not image" not in markexpr
    keep: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        if (
            HERE not in Path(str(item.fspath)).resolve().parents
            or (item.get_closest_marker("image") is not None) == wanted
        ):
            keep.append(item)
        else:
            dropped.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep
