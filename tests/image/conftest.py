"""Selection: items marked `image` (build the container image and run it: minutes, root,
podman) run only when `-m image` selects them (`make image-test`); the quick checks of the
image's files in this folder run in the default run."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def deselect_unless_selected(
    config: pytest.Config, items: list[pytest.Item], here: Path, marker: str
) -> None:
    """In folder `here`, keep the items marked `marker` only when `-m` selects it, and only
    those then (deselected, not skipped, so the default run does not count them)."""
    markexpr = str(config.getoption("markexpr") or "")
    wanted = marker in markexpr and f"not {marker}" not in markexpr
    keep: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        if here not in Path(str(item.fspath)).resolve().parents or (
            (item.get_closest_marker(marker) is not None) == wanted
        ):
            keep.append(item)
        else:
            dropped.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    deselect_unless_selected(config, items, HERE, "image")
