"""WatchChanges on the real service: grpcurl prints the stream, and the shipped client's
near-cache converges to the Wrapper's truth after a burst of changes and a server restart."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from hybridcache.client import ClientConfig, HybridCacheClient, NearCache, WatchConfig
from hybridcache.server.app import Service
from hybridcache_dev.harness.wrapper_admin import WrapperAdmin
from hybridcache_dev.stack.redis_process import RedisProcess
from tests.conftest import WRAPPER_TOKEN, service_settings
from tests.helpers import wait_for

pytestmark = pytest.mark.timeout(90)
GRPCURL = str(Path(sys.executable).parent / "grpcurl")
CODES = ["crm.leads.create", "crm.leads.read", "crm.contacts.export", "hrms.payroll.run"]


def set_cost(dev_wrapper: Any, tenant: str, code: str, cost: str) -> None:
    with WrapperAdmin(dev_wrapper.url, WRAPPER_TOKEN) as admin:
        admin.put_cost(tenant, code, cost)


def truth(dev_wrapper: Any, tenant: str, code: str) -> Decimal:
    with WrapperAdmin(dev_wrapper.url, WRAPPER_TOKEN) as admin:
        return admin.cost(tenant, code)


def test_grpcurl_opens_the_stream_and_prints_events(
    service: Service, dev_wrapper: Any, tmp_path: Path
) -> None:
    output = tmp_path / "stream.json"
    with output.open("w") as sink:
        stream = subprocess.Popen(
            [GRPCURL, "-plaintext", "-max-time", "20",
             "-d", '{"tenant_ids": ["acme"], "kinds": ["KIND_CREDIT_COSTS"]}',
             f"127.0.0.1:{service.port}", "hybridcache.v1.HybridCache/WatchChanges"],
            stdout=sink, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_for(
                lambda: '"progress"' in output.read_text(), timeout=15, what="the stream's first message"
            )
            set_cost(dev_wrapper, "acme", "crm.leads.read", "9.5")
            set_cost(dev_wrapper, "globex", "crm.leads.read", "8.5")  # another tenant: filtered out
            wait_for(lambda: '"9.5"' in output.read_text(), timeout=10, what="the change printed by grpcurl")
        finally:
            stream.terminate()
            stream.wait(10)
    printed = output.read_text()
    assert '"tenant_id": "acme"' in printed
    assert "credit-config-changed" in printed
    assert '"8.5"' not in printed, "an event of a tenant not asked for reached the stream"


def test_near_cache_converges_after_a_burst_and_a_restart(
    start_service: Callable[..., Service], dev_wrapper: Any, redis_server: RedisProcess
) -> None:
    settings = service_settings(dev_wrapper.url, redis_server.url, watch_heartbeat_s=0.5)
    service = start_service(settings)
    port = service.port
    config = ClientConfig(watch=WatchConfig(idle_timeout=3.0, initial_backoff=0.05, max_backoff=0.5))
    with HybridCacheClient(f"127.0.0.1:{port}", config) as client, NearCache(client, "acme") as near:
        assert near.wait_live(10), f"near-cache watch not live: {near.watch_error!r}"

        def converged() -> bool:
            return all(near.credit_cost(code) == truth(dev_wrapper, "acme", code) for code in CODES)

        assert converged()
        for round_ in range(25):  # a burst: 100 changes as fast as the Wrapper takes them
            for i, code in enumerate(CODES):
                set_cost(dev_wrapper, "acme", code, f"{round_}.{i}5")
        wait_for(converged, timeout=10, what="the near-cache to converge after a burst")

        service.stop(0, drain_s=0)
        for i, code in enumerate(CODES):  # changed while no server is up: only a resync can tell
            set_cost(dev_wrapper, "acme", code, f"77.{i}")
        start_service(service_settings(dev_wrapper.url, redis_server.url, port=port, watch_heartbeat_s=0.5))
        wait_for(converged, timeout=20, what="the near-cache to converge after a server restart")
        assert near.live
