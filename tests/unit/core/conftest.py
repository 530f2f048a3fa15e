"""Fixtures the core's test modules share; each module provides its own `wrapper` (its data)."""

from __future__ import annotations

import pytest

from hybridcache.server.core import HybridCache
from tests.unit.core.fakes import FakeClock, FakeWrapper


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def cache(wrapper: FakeWrapper, clock: FakeClock) -> HybridCache:
    return HybridCache(wrapper, clock=clock)
