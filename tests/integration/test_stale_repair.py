"""Repairs that finish: a change whose refetch fails while the Wrapper is down is repaired
once it is back, and is labelled REPAIRING meanwhile (issue: 8 min 49 s of the old value
labelled CACHE / LIVE, until the periodic refresh).

Real parts: a redis-server of the test's own, the development Wrapper SIGKILLed and started
again on the same port and database, the real server (in process, port 0).
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from hybridcache.server.app import Service
from hybridcache.v1 import hybridcache_pb2 as pb
from hybridcache.v1 import hybridcache_pb2_grpc as pb_grpc
from hybridcache_dev.harness.wrapper_admin import WrapperAdmin
from hybridcache_dev.stack.redis_process import RedisProcess
from hybridcache_dev.wrapper import DevWrapperProcess, launch
from tests.conftest import WRAPPER_TOKEN, service_settings
from tests.helpers import wait_for

CODE = "crm.deals.create"
# Repair attempts back off up to 5 s (events/repair.py); the breaker's probe (2 s) is shorter.
HEAL_BOUND_S = 6.0
MARGIN_S = 4.0  # a loaded 2-core host


class Wrapper:
    """The development Wrapper on one port and database, killable and restartable."""

    def __init__(self, redis_url: str, db_path: Path) -> None:
        self.redis_url = redis_url
        self.db_path = db_path
        self.process: DevWrapperProcess = self._launch(0)
        self.url = self.process.url

    def _launch(self, port: int) -> DevWrapperProcess:
        return launch(self.redis_url, token=WRAPPER_TOKEN, db_path=str(self.db_path), app="crm", port=port)

    def restart(self) -> None:
        self.process = self._launch(self.process.port)

    def put_cost(self, tenant: str, code: str, cost: str, *, publish: bool) -> dict[str, Any]:
        with WrapperAdmin(self.url, WRAPPER_TOKEN) as admin:
            return admin.put_cost(tenant, code, cost, publish=publish)


@pytest.fixture
def wrapper(own_redis: RedisProcess) -> Iterator[Wrapper]:
    with tempfile.TemporaryDirectory(prefix="hc-stale-") as tmp:
        built = Wrapper(own_redis.url, Path(tmp) / "wrapper.db")
        try:
            yield built
        finally:
            built.process.stop()


def _cost(stub: pb_grpc.HybridCacheStub) -> pb.GetCreditCostResponse:
    reply: pb.GetCreditCostResponse = stub.GetCreditCost(
        pb.GetCreditCostRequest(tenant_id="acme", operation_code=CODE), timeout=2
    )
    return reply


@pytest.mark.timeout(90)
def test_a_refetch_that_failed_while_the_wrapper_was_down_heals_when_it_returns(
    own_redis: RedisProcess, wrapper: Wrapper, start_service: Any
) -> None:
    service: Service = start_service(service_settings(wrapper.url, own_redis.url, tenants=["acme"]))
    with grpc.insecure_channel(f"127.0.0.1:{service.port}") as channel:
        stub = pb_grpc.HybridCacheStub(channel)
        held = _cost(stub).credit_cost.cost.value
        assert held != "9.5"
        wrapper.put_cost("acme", CODE, "9.5", publish=False)  # the authority changes, silently
        wrapper.process.kill()  # SIGKILL
        event = {
            "eventId": "x1",
            "eventType": "credit-config-changed",
            "tenantId": "acme",
            "data": {
                "operationCode": CODE,
                "changedFields": ["credit_cost"],
                "newValue": 9.5,
                "oldValue": 1.23,  # not what is held: the event is not trusted, the key is refetched
            },
        }
        with redis.Redis.from_url(own_redis.url) as publisher:
            assert publisher.publish("crm:acme:credit-config-changed", json.dumps(event)) == 1
        stats = service.feed.stats
        wait_for(lambda: stats.snapshot().refetch_errors >= 1, timeout=10, what="a failed refetch")

        # While the Wrapper is down: the old value, and provenance says it is being repaired.
        during = _cost(stub)
        assert during.credit_cost.cost.value == held
        assert during.provenance.freshness == pb.FRESHNESS_REPAIRING, (
            f"an answer known to be outdated was labelled {pb.Freshness.Name(during.provenance.freshness)}"
        )

        metrics = _metrics(service)
        assert metrics[("hybridcache_repairs_pending", ())] == 1
        assert metrics[("hybridcache_repairs_oldest_pending_seconds", ())] > 0
        assert metrics[("hybridcache_repair_attempts_total", (("outcome", "error"),))] >= 1
        assert metrics[("hybridcache_repair_attempts_total", (("outcome", "ok"),))] == 0

        wrapper.restart()
        back_at = time.monotonic()
        healed = wait_for(
            lambda: (reply := _cost(stub)).credit_cost.cost.value == "9.5" and reply,
            timeout=HEAL_BOUND_S + MARGIN_S,
            what=f"GetCreditCost to return the Wrapper's 9.5 within {HEAL_BOUND_S} s of its restart",
        )
        took = time.monotonic() - back_at
        assert took <= HEAL_BOUND_S + MARGIN_S
        assert healed.provenance.freshness == pb.FRESHNESS_LIVE
        print(f"\nhealed {took:.2f} s after the Wrapper answered again")

        snapshot = stats.snapshot()
        assert snapshot.refetched == 1, "only the attempt that succeeded counts as refetched"
        assert snapshot.refetch_errors >= 1
        assert snapshot.refetch_attempts == snapshot.refetched + snapshot.refetch_errors
        assert snapshot.refetch_reasons == {"old-value-mismatch": 1}
        assert service.feed.ingestor.worker.pending_refetches() == 0
        metrics = _metrics(service)
        assert metrics[("hybridcache_repairs_pending", ())] == 0
        assert metrics[("hybridcache_repair_attempts_total", (("outcome", "ok"),))] == 1
        assert metrics[("hybridcache_events_total", (("outcome", "refetched"),))] == 1
        assert metrics[("hybridcache_refetch_requests_total", (("reason", "old-value-mismatch"),))] == 1


ITEM_ROUTE = "GET /api/tenants/{tenantId}/credit-costs/{operationCode}"
APPLY_BOUND_S = 2.0  # an event is applied within milliseconds; a loaded host's delays on top


def _refetch_event(event_id: str, version: int | None) -> str:
    """A change without `newValue`: the key must be refetched (with the change's version, if any)."""
    data: dict[str, Any] = {"operationCode": CODE, "changedFields": ["credit_cost"]}
    if version is not None:
        data["version"] = version
    return json.dumps(
        {"eventId": event_id, "eventType": "credit-config-changed", "tenantId": "acme", "data": data}
    )


@pytest.mark.timeout(90)
@pytest.mark.parametrize("versioned", [True, False], ids=["request-versioned", "request-version-less"])
def test_a_published_change_for_a_key_being_repaired_is_applied_at_once(
    own_redis: RedisProcess, wrapper: Wrapper, start_service: Any, versioned: bool
) -> None:
    """A key whose refetch keeps failing (the Wrapper's item route answers 500) gets a newer
    published change (newValue, version, an oldValue that is not what is held): its value is
    answered at once. When the repair was asked for with a version the event is at least as
    new as, the repair is settled and the answer is LIVE; a version-less request may refer to
    any version, so the key stays REPAIRING until the Wrapper answers. Before: the event was
    taken for a mismatch, and the old value was answered until the Wrapper was back.
    The verifier is off: its pass (one soon after start) reads the Wrapper's bucket route,
    which is not failing, and would repair the key there instead of the event."""
    service: Service = start_service(
        service_settings(wrapper.url, own_redis.url, tenants=["acme"], verify_interval_s=0)
    )
    with (
        grpc.insecure_channel(f"127.0.0.1:{service.port}") as channel,
        WrapperAdmin(wrapper.url, WRAPPER_TOKEN) as admin,
    ):
        stub = pb_grpc.HybridCacheStub(channel)
        held = _cost(stub).credit_cost.cost.value
        admin.set_faults(failStatus=500, routes=[ITEM_ROUTE])
        silent = wrapper.put_cost("acme", CODE, "9.5", publish=False)
        stats = service.feed.stats
        with redis.Redis.from_url(own_redis.url) as publisher:
            event = _refetch_event("r1", silent["version"] if versioned else None)
            assert publisher.publish("crm:acme:credit-config-changed", event) == 1
        wait_for(lambda: stats.snapshot().refetch_errors >= 1, timeout=10, what="a failed refetch")
        during = _cost(stub)
        assert (during.credit_cost.cost.value, during.provenance.freshness) == (
            held,
            pb.FRESHNESS_REPAIRING,
        ), (
            f"before the change: expected {held} REPAIRING, got {during.credit_cost.cost.value} "
            f"{pb.Freshness.Name(during.provenance.freshness)}; verifier {service.verifier.stats}, "
            f"events {stats.snapshot()}"
        )

        published = wrapper.put_cost("acme", CODE, "12.25", publish=True)  # oldValue 9.5: not held
        assert published["published"], "the dev Wrapper did not publish the change"
        sent = time.monotonic()
        reply = wait_for(
            lambda: (r := _cost(stub)).credit_cost.cost.value == "12.25" and r,
            timeout=APPLY_BOUND_S + MARGIN_S,
            what="the published change to be answered while its key's refetch keeps failing",
        )
        took = time.monotonic() - sent
        assert took <= APPLY_BOUND_S + MARGIN_S
        assert reply.provenance.version == published["version"]
        expected = pb.FRESHNESS_LIVE if versioned else pb.FRESHNESS_REPAIRING
        assert reply.provenance.freshness == expected, (
            f"after a change {'as new as' if versioned else 'unordered with'} the repair's request: "
            f"expected {pb.Freshness.Name(expected)}, got {pb.Freshness.Name(reply.provenance.freshness)}"
        )
        pending = service.feed.ingestor.worker.pending_refetches()
        assert pending == (0 if versioned else 1), f"{pending} keys pending"
        assert stats.snapshot().refetches_settled_by_events == (1 if versioned else 0)
        assert stats.snapshot().refetched == 0, "a refetch succeeded while the item route was failing"

        admin.clear_faults()
        healed = wait_for(
            lambda: (r := _cost(stub)).provenance.freshness == pb.FRESHNESS_LIVE and r,
            timeout=HEAL_BOUND_S + MARGIN_S,
            what="the key to be LIVE once the Wrapper's item route answers",
        )
        assert healed.credit_cost.cost.value == "12.25"
        print(f"\nthe published change answered {took:.3f} s after it was written")


def _metrics(service: Service) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The service's Prometheus samples, by (name, sorted labels)."""
    text = generate_latest(service.metrics.registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
