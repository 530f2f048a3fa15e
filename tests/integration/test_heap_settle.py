"""The Service settles its heap (collect, then freeze) once its replicas are loaded."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from hybridcache.server.app import Service
from hybridcache.server.config import Settings
from hybridcache_dev.stack.redis_process import RedisProcess
from tests.conftest import service_settings

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()  # leave the test process as it was


def test_the_heap_is_frozen_before_serving(
    unfrozen: None, start_service: Callable[[Settings], Service], dev_wrapper: Any, redis_server: RedisProcess
) -> None:
    service = start_service(service_settings(dev_wrapper.url, redis_server.url))  # returns once SERVING

    assert service.heap is not None
    assert service.heap.settled >= 1, "SERVING was announced before the heap was settled"
    assert gc.get_freeze_count() > 10_000, "nothing was frozen after the replicas loaded"


def test_gc_freeze_off_leaves_the_collector_alone(
    unfrozen: None, start_service: Callable[[Settings], Service], dev_wrapper: Any, redis_server: RedisProcess
) -> None:
    service = start_service(service_settings(dev_wrapper.url, redis_server.url, gc_freeze=False))

    assert service.heap is None
    assert gc.get_freeze_count() == 0, "HYBRIDCACHE_GC_FREEZE=false must not freeze anything"
