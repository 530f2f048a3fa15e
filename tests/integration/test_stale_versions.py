"""Versions that cannot be poisoned, through the real event path (issue: an event with
version 2^63-1 pinned a key until the next resync; version-less events reset the held
version to 0, after which a delayed older event was accepted over a newer value).

Real parts: the shared redis-server, the development Wrapper (its admin writes publish
versioned events), the real server; the odd events are PUBLISHed straight onto Redis.
"""

from __future__ import annotations

import json
from typing import Any

import grpc
import pytest
import redis

from hybridcache.server.app import Service
from hybridcache.v1 import hybridcache_pb2 as pb
from hybridcache.v1 import hybridcache_pb2_grpc as pb_grpc
from hybridcache_dev.harness.wrapper_admin import WrapperAdmin
from hybridcache_dev.stack.redis_process import RedisProcess
from tests.conftest import WRAPPER_TOKEN, service_settings
from tests.helpers import wait_for

CHANNEL = "crm:acme:credit-config-changed"
APPLY_BOUND_S = 2.0  # an event (or the refetch it triggers) takes effect well within this


def _put_cost(wrapper_url: str, code: str, cost: str) -> dict[str, Any]:
    with WrapperAdmin(wrapper_url, WRAPPER_TOKEN) as admin:
        return admin.put_cost("acme", code, cost)


def _event(event_id: str, code: str, new: object, *, old: object = None, version: int | None = None) -> str:
    data: dict[str, Any] = {"operationCode": code, "changedFields": ["credit_cost"], "newValue": new}
    if old is not None:
        data["oldValue"] = old
    if version is not None:
        data["version"] = version
    return json.dumps(
        {"eventId": event_id, "eventType": "credit-config-changed", "tenantId": "acme", "data": data}
    )


def _read(stub: pb_grpc.HybridCacheStub, code: str) -> tuple[str, int]:
    reply = stub.GetCreditCost(pb.GetCreditCostRequest(tenant_id="acme", operation_code=code), timeout=2)
    return reply.credit_cost.cost.value, reply.provenance.version


def _publish_and_wait(service: Service, publisher: redis.Redis, message: str) -> None:
    received = service.feed.stats.snapshot().received
    assert publisher.publish(CHANNEL, message) == 1
    wait_for(lambda: service.feed.stats.snapshot().received > received, timeout=5, what="the event read")
    assert service.feed.ingestor.wait_idle(5), "the refetch it caused did not finish"


@pytest.fixture
def stub_and_service(start_service: Any, dev_wrapper: Any, redis_server: RedisProcess) -> Any:
    service: Service = start_service(service_settings(dev_wrapper.url, redis_server.url, tenants=["acme"]))
    with grpc.insecure_channel(f"127.0.0.1:{service.port}") as channel:
        yield pb_grpc.HybridCacheStub(channel), service


@pytest.mark.timeout(60)
def test_an_absurd_version_is_refetched_and_the_wrappers_next_change_applies(
    stub_and_service: Any, dev_wrapper: Any, redis_server: RedisProcess
) -> None:
    stub, service = stub_and_service
    code = "crm.deals.close"
    truth = _read(stub, code)
    with redis.Redis.from_url(redis_server.url) as publisher:
        _publish_and_wait(service, publisher, _event("poison-1", code, 99, version=9223372036854775807))
    after = _read(stub, code)
    assert after == truth, f"an event with version 2^63-1 was applied: the answer became {after}"

    changed = _put_cost(dev_wrapper.url, code, "7.25")  # the Wrapper's real change, published
    wait_for(
        lambda: _read(stub, code) == ("7.25", changed["version"]),
        timeout=APPLY_BOUND_S,
        what=f"the Wrapper's real change (version {changed['item']['version']}) after the poisoned event",
    )
    reasons = service.feed.stats.snapshot().refetch_reasons
    assert reasons.get("implausible-version") == 1, reasons


@pytest.mark.timeout(60)
def test_a_version_less_event_keeps_the_held_version(
    stub_and_service: Any, dev_wrapper: Any, redis_server: RedisProcess
) -> None:
    stub, service = stub_and_service
    code = "crm.leads.convert"
    for cost in ("3.1", "3.2", "3.3"):  # published with versions: the service holds the latest
        changed = _put_cost(dev_wrapper.url, code, cost)
    version = changed["version"]
    wait_for(
        lambda: _read(stub, code) == ("3.3", version), timeout=APPLY_BOUND_S, what="the versioned changes"
    )
    assert version >= 3

    with redis.Redis.from_url(redis_server.url) as publisher:
        # The design note's format: no version.
        _publish_and_wait(service, publisher, _event("plain-1", code, 4.5, old="3.3"))
        assert _read(stub, code) == ("4.5", version), "a version-less event moved the held version"
        # A delayed event of an older version must still be refused.
        _publish_and_wait(service, publisher, _event("late-1", code, 1.5, version=version - 1))
    assert _read(stub, code) == ("4.5", version), "an older event was accepted after a version-less one"
