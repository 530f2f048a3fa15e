"""The events package's view of the core matches the core (names checked here, types by mypy)."""

from __future__ import annotations

import inspect

from hybridcache.server.core import MISSING, HybridCache
from hybridcache.server.events.ports import ChangeCache


def test_the_core_has_every_method_the_port_names() -> None:
    port_methods = {
        name for name, _ in inspect.getmembers(ChangeCache, inspect.isfunction) if not name.startswith("_")
    }
    assert port_methods <= set(dir(HybridCache))
    # Leaving expected_old out is how the ingestor says "no oldValue": the core's default.
    assert inspect.signature(HybridCache.apply).parameters["expected_old"].default is MISSING
