"""The Service's public `on_change_applied` hook (the benchmark's seam, instead of patching a
class): called with each change right after the cache applied it, before WatchChanges gets it."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from hybridcache.server.app import Service, create_service
from hybridcache.server.hub import HubEvent
from hybridcache.server.ops.readiness import wait_serving
from hybridcache_dev.harness.wrapper_admin import WrapperAdmin
from hybridcache_dev.stack.redis_process import RedisProcess
from tests.conftest import WRAPPER_TOKEN, service_settings
from tests.helpers import wait_for

pytestmark = pytest.mark.timeout(60)


def test_the_hook_sees_each_applied_change(dev_wrapper: Any, redis_server: RedisProcess) -> None:
    seen: list[tuple[HubEvent, int]] = []  # (event, the hub's sequence when the hook ran)
    lock = threading.Lock()
    services: list[Service] = []

    def on_change_applied(event: HubEvent) -> None:
        with lock:
            seen.append((event, services[0].hub.current_sequence if services else -1))

    service = create_service(
        service_settings(dev_wrapper.url, redis_server.url), on_change_applied=on_change_applied
    )
    services.append(service)
    try:
        wait_serving(f"127.0.0.1:{service.port}")
        with WrapperAdmin(dev_wrapper.url, WRAPPER_TOKEN) as admin:
            admin.put_cost("acme", "crm.leads.create", "7.25")

        def applied() -> list[tuple[HubEvent, int]]:
            with lock:
                return [(e, s) for e, s in seen if e.tenant_id == "acme" and "crm.leads.create" in e.keys]

        calls = wait_for(applied, timeout=20, what="the hook called for the credit-cost change")
        event, sequence_then = calls[0]
        assert event.event_id, event
        assert not event.resync, event
        # The hub still gets the change, after the hook (the hook adds to publishing, not replaces it).
        wait_for(
            lambda: service.hub.current_sequence > sequence_then,
            timeout=10,
            what="the hub publishing the change the hook saw",
        )
    finally:
        service.stop(0, drain_s=0)
