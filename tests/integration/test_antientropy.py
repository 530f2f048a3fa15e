"""Anti-entropy against the real parts: the development Wrapper over HTTP, a private Redis,
the real server. Divergences the event path cannot see heal within the verify interval."""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis

from hybridcache.server.app import Service
from hybridcache.server.config import Settings
from hybridcache.v1 import hybridcache_pb2 as pb
from hybridcache.v1 import hybridcache_pb2_grpc as pb_grpc
from hybridcache_dev.stack.redis_process import RedisProcess
from hybridcache_dev.wrapper import DevWrapperProcess, launch
from tests.conftest import WRAPPER_TOKEN, service_settings
from tests.faults.stack import WrapperAdmin
from tests.helpers import wait_for

pytestmark = pytest.mark.timeout(90)

INTERVAL_S = 1.0
BOUND_S = INTERVAL_S + 4.0  # one interval, the pass itself, and slack for a loaded machine
CODE = "crm.deals.create"


@pytest.fixture
def wrapper(own_redis: RedisProcess) -> Iterator[DevWrapperProcess]:
    with (
        tempfile.TemporaryDirectory(prefix="hc-ae-") as tmp,
        launch(own_redis.url, token=WRAPPER_TOKEN, db_path=str(Path(tmp) / "w.db"), app="crm") as w,
    ):
        yield w


@pytest.fixture
def admin(wrapper: DevWrapperProcess) -> Iterator[WrapperAdmin]:
    a = WrapperAdmin(wrapper.url, token=WRAPPER_TOKEN)
    yield a
    a.close()


def _settings(wrapper: DevWrapperProcess, redis_: RedisProcess, **extra: Any) -> Settings:
    return service_settings(wrapper.url, redis_.url, verify_interval_s=INTERVAL_S, **extra)


def _cost(stub: pb_grpc.HybridCacheStub) -> pb.GetCreditCostResponse:
    return stub.GetCreditCost(pb.GetCreditCostRequest(tenant_id="acme", operation_code=CODE), timeout=2)


def _stub(service: Service) -> pb_grpc.HybridCacheStub:
    return pb_grpc.HybridCacheStub(grpc.insecure_channel(f"127.0.0.1:{service.port}"))


def test_a_change_whose_event_was_lost_heals_within_the_interval_and_is_streamed(
    start_service: Callable[[Settings], Service],
    wrapper: DevWrapperProcess,
    own_redis: RedisProcess,
    admin: WrapperAdmin,
) -> None:
    service = start_service(_settings(wrapper, own_redis))
    stub = _stub(service)
    assert _cost(stub).credit_cost.cost.value != "9.5"
    stream = stub.WatchChanges(pb.WatchChangesRequest(tenant_ids=["acme"]), timeout=30)
    next(stream)  # the subscription is confirmed
    changed = admin.put_cost("acme", CODE, "9.5", publish=False)  # the Wrapper changes; no event
    t0 = time.monotonic()
    wait_for(
        lambda: _cost(stub).credit_cost.cost.value == "9.5", timeout=BOUND_S, what="the lost change to heal"
    )
    healed_s = time.monotonic() - t0
    answer = _cost(stub)
    assert answer.provenance.version == changed["version"], "the Wrapper's version, with its value"
    for message in stream:
        if message.WhichOneof("message") == "change" and CODE in message.change.keys:
            assert message.change.event_type == "anti-entropy"
            break
    stream.cancel()
    assert healed_s <= BOUND_S
    assert service.verifier.stats.keys_repaired >= 1


def test_a_forged_absurd_version_is_replaced_by_the_wrappers_answer(
    start_service: Callable[[Settings], Service],
    wrapper: DevWrapperProcess,
    own_redis: RedisProcess,
    admin: WrapperAdmin,
) -> None:
    service = start_service(_settings(wrapper, own_redis))
    stub = _stub(service)
    truth = admin.item(f"acme/credit-costs/{CODE}")
    forged = {
        "eventId": "forged-1",
        "eventType": "credit-config-changed",
        "tenantId": "acme",
        "data": {
            "operationCode": CODE,
            "changedFields": ["credit_cost"],
            "newValue": 99,
            "version": truth["version"] + 50,  # plausible (within the version window), still forged
        },
    }
    with redis.Redis.from_url(own_redis.url) as r:
        r.publish("crm:acme:credit-config-changed", json.dumps(forged))
    wait_for(lambda: _cost(stub).credit_cost.cost.value == "99", timeout=10, what="the forged event to apply")
    wait_for(
        lambda: _cost(stub).provenance.version == truth["version"],
        timeout=BOUND_S,
        what="the Wrapper's value and version to replace the forged ones",
    )
    assert _cost(stub).credit_cost.cost.value == truth["cost"]
    # The key is no longer pinned: the Wrapper's next real change applies from its event.
    admin.put_cost("acme", CODE, "4.75")
    wait_for(lambda: _cost(stub).credit_cost.cost.value == "4.75", timeout=10, what="the next real change")
    assert service.verifier.stats.keys_repaired >= 1


def test_a_wrapper_without_digests_keeps_serving_and_says_so_once(
    start_service: Callable[[Settings], Service],
    wrapper: DevWrapperProcess,
    own_redis: RedisProcess,
    admin: WrapperAdmin,
    caplog: pytest.LogCaptureFixture,
) -> None:
    routes = [
        f"GET /api/tenants/{{tenantId}}/digests/{k}"
        for k in ("credit-costs", "role-permissions", "user-status", "feature-flags")
    ]
    admin.set_faults(failStatus=404, routes=routes)
    caplog.set_level(logging.INFO, logger="hybridcache.server.events.verifier")
    service = start_service(_settings(wrapper, own_redis))
    wait_for(lambda: service.verifier.stats.passes >= 3, timeout=15, what="three verifier passes")
    lines = [r.getMessage() for r in caplog.records if "anti-entropy" in r.getMessage()]
    assert len(lines) == 1, lines
    assert "no digest endpoint" in lines[0]
    assert "periodic full refresh" in lines[0]
    assert service.verifier.supported is False
    admin.put_cost("acme", CODE, "6.5")  # events still flow
    stub = _stub(service)
    wait_for(lambda: _cost(stub).credit_cost.cost.value == "6.5", timeout=10, what="an event to apply")
