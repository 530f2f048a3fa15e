"""Per-tenant views: a caller bound to some tenants learns nothing about another tenant's
activity from GetCacheStats (counts, entries, events) — before, every count was summed over
all tenants, so acme could watch globex's reads and changes."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest

from hybridcache.server.api.auth import token_sha256
from hybridcache.server.app import Service
from hybridcache.v1 import hybridcache_pb2 as pb
from hybridcache.v1 import hybridcache_pb2_grpc as pb_grpc
from hybridcache_dev.harness.wrapper_admin import WrapperAdmin
from tests.conftest import WRAPPER_TOKEN, service_settings
from tests.helpers import wait_for

pytestmark = pytest.mark.timeout(120)

ACME, GLOBEX, OPS = "acme-view-token", "globex-view-token", "ops-view-token"
CALLERS = [
    {"name": "crm-acme", "token_sha256": token_sha256(ACME), "tenants": ["acme"]},
    {"name": "crm-globex", "token_sha256": token_sha256(GLOBEX), "tenants": ["globex"]},
    {"name": "ops", "token_sha256": token_sha256(OPS), "tenants": ["*"]},
]


def auth(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


@pytest.fixture
def stub(start_service: Callable[..., Service], dev_wrapper: Any, redis_server: Any) -> Iterator[Any]:
    service = start_service(
        service_settings(dev_wrapper.url, redis_server.url, insecure_dev_mode=False, callers=CALLERS)
    )
    with grpc.insecure_channel(f"127.0.0.1:{service.port}") as channel:
        yield pb_grpc.HybridCacheStub(channel)


def stats(stub: Any, token: str) -> pb.GetCacheStatsResponse:
    reply: pb.GetCacheStatsResponse = stub.GetCacheStats(
        pb.GetCacheStatsRequest(), metadata=auth(token), timeout=5
    )
    return reply


def activity(stub: Any, dev_wrapper: Any, tenant: str, token: str) -> None:
    """Reads (hits, misses, a fetch) and one applied change event, all of `tenant`."""
    for _ in range(5):
        stub.GetCreditCost(
            pb.GetCreditCostRequest(tenant_id=tenant, operation_code="crm.leads.create"),
            metadata=auth(token),
            timeout=5,
        )
    with pytest.raises(grpc.RpcError):
        stub.GetCreditCost(
            pb.GetCreditCostRequest(tenant_id=tenant, operation_code="no.such.code"),
            metadata=auth(token),
            timeout=5,
        )
    stub.GetUserProfile(
        pb.GetUserProfileRequest(tenant_id=tenant, user_id="user-2"), metadata=auth(token), timeout=5
    )
    with WrapperAdmin(dev_wrapper.url, WRAPPER_TOKEN) as admin:
        admin.put_cost(tenant, "crm.leads.create", "9.5")


def test_a_tenant_bound_caller_sees_only_its_tenants_figures(stub: Any, dev_wrapper: Any) -> None:
    acme_before = stats(stub, ACME)
    ops_before = stats(stub, OPS)
    assert list(acme_before.loaded_tenant_ids) == ["acme"]

    activity(stub, dev_wrapper, "globex", GLOBEX)
    wait_for(
        lambda: stats(stub, OPS).events_applied > ops_before.events_applied,
        timeout=10,
        what="globex's change applied (seen by the all-tenants caller)",
    )
    ops_after = stats(stub, OPS)
    assert ops_after.kinds != ops_before.kinds, "the all-tenants view must move with globex's reads"
    acme_after = stats(stub, ACME)
    assert acme_after == acme_before, (
        f"acme's view changed with globex's activity:\nbefore {acme_before}\nafter {acme_after}"
    )
    globex = stats(stub, GLOBEX)
    costs = next(k for k in globex.kinds if k.kind == pb.KIND_CREDIT_COSTS)
    assert (costs.hits, costs.misses) == (5, 1), "globex's own view counts its own reads"
    assert globex.events_applied >= 1

    activity(stub, dev_wrapper, "acme", ACME)
    wait_for(
        lambda: stats(stub, ACME).events_applied > acme_before.events_applied,
        timeout=10,
        what="acme's change counted in acme's view",
    )
    assert stats(stub, GLOBEX) == globex, "globex's view changed with acme's activity"


def test_counters_of_made_up_tenants_are_bounded() -> None:
    """A caller allowed every tenant may name any: past the cap they share one unattributed
    set, still in the totals."""
    from hybridcache.server.core.kinds import Kind
    from hybridcache.server.core.stats import TenantCounters

    counters = TenantCounters([Kind.CREDIT_COSTS], max_tenants=3)
    for n in range(10):
        counters.of(f"t{n}")[Kind.CREDIT_COSTS].hits += 1
    assert counters.total(Kind.CREDIT_COSTS).hits == 10
    assert counters.total(Kind.CREDIT_COSTS, ["t0", "t1", "t2"]).hits == 3
    assert counters.total(Kind.CREDIT_COSTS, ["t9"]).hits == 0


@pytest.fixture
def watched(start_service: Callable[..., Service], dev_wrapper: Any, redis_server: Any) -> Iterator[Any]:
    service = start_service(
        service_settings(
            dev_wrapper.url, redis_server.url, insecure_dev_mode=False, callers=CALLERS, watch_heartbeat_s=0.2
        )
    )
    with grpc.insecure_channel(f"127.0.0.1:{service.port}") as channel:
        yield pb_grpc.HybridCacheStub(channel)


def set_cost(dev_wrapper: Any, tenant: str, cost: str) -> None:
    with WrapperAdmin(dev_wrapper.url, WRAPPER_TOKEN) as admin:
        admin.put_cost(tenant, "crm.leads.create", cost)


def test_stream_positions_reveal_nothing_of_other_tenants(watched: Any, dev_wrapper: Any) -> None:
    """acme's stream numbers acme's changes only, its heartbeats do not move with globex's,
    and its tokens are sealed: 20 globex changes leave no trace on it."""
    stream = watched.WatchChanges(
        pb.WatchChangesRequest(tenant_ids=["acme"]), metadata=auth(ACME), timeout=60
    )
    last = 0  # the sequence of the last acme change this stream delivered

    def read_until(done: Callable[[pb.WatchChangesResponse], bool]) -> pb.WatchChangesResponse:
        nonlocal last
        for message in stream:
            if message.WhichOneof("message") == "change":
                assert message.change.tenant_id == "acme"
                assert message.change.sequence == last + 1, "acme's numbering skipped: it counts others"
                last = message.change.sequence
            if done(message):
                return message
        raise AssertionError("the stream ended")

    def cost_change(value: str) -> Callable[[pb.WatchChangesResponse], bool]:
        return lambda m: m.change.credit_cost.cost.value == value

    set_cost(dev_wrapper, "acme", "1.25")
    read_until(cost_change("1.25"))
    applied = stats(watched, OPS).events_applied
    for n in range(20):
        set_cost(dev_wrapper, "globex", f"3.{n:02d}")
    wait_for(
        lambda: stats(watched, OPS).events_applied >= applied + 20,
        timeout=20,
        what="globex's 20 changes applied",
    )
    # Heartbeats queued before globex's changes were applied prove nothing: read those sent
    # for a second after (every 0.2 s); each must show acme's own count.
    fresh_after = time.monotonic() + 1.0
    while True:
        beat = read_until(lambda m: m.WhichOneof("message") == "progress")
        assert beat.progress.sequence == last, f"a heartbeat shows {beat.progress.sequence}, acme had {last}"
        if time.monotonic() > fresh_after:
            break
    set_cost(dev_wrapper, "acme", "1.75")
    read_until(cost_change("1.75"))  # numbered last + 1: checked in read_until
    stream.cancel()
