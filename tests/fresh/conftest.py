"""Selection: the clean-clone set-up check runs only with `-m fresh` (`make fresh-test`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.image.conftest import deselect_unless_selected


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    deselect_unless_selected(config, items, Path(__file__).resolve().parent, "fresh")
