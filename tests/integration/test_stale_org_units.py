"""Org units: a change to one unit drops every cached unit that names it (issue: cached
parents kept the old name in `children[]` and descendants in `ancestors[]` until their TTL).

Real parts: the shared redis-server, the development Wrapper (a PATCH of an org unit
publishes `org-unit-changed`), the real server with the default 300 s TTL.
"""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from hybridcache.server.app import Service
from hybridcache.v1 import hybridcache_pb2 as pb
from hybridcache.v1 import hybridcache_pb2_grpc as pb_grpc
from hybridcache_dev.harness.wrapper_admin import WrapperAdmin
from hybridcache_dev.stack.redis_process import RedisProcess
from tests.conftest import WRAPPER_TOKEN, service_settings
from tests.helpers import wait_for

PARENT, CHILD, GRANDCHILD = "org-root", "org-sales", "org-sales-emea"
BOUND_S = 1.0  # from the Wrapper's write to every related answer showing it (an event's path)


def _rename(wrapper_url: str, unit: str, name: str) -> None:
    with WrapperAdmin(wrapper_url, WRAPPER_TOKEN) as admin:
        admin.patch_org_unit("acme", unit, name=name)


def _unit(stub: pb_grpc.HybridCacheStub, unit: str) -> pb.GetOrgUnitResponse:
    reply: pb.GetOrgUnitResponse = stub.GetOrgUnit(
        pb.GetOrgUnitRequest(tenant_id="acme", org_unit_id=unit), timeout=2
    )
    return reply


def _names_seen(stub: pb_grpc.HybridCacheStub) -> dict[str, set[str]]:
    """Every name each unit is given, by any of the three cached answers."""
    seen: dict[str, set[str]] = {}
    for unit in (PARENT, CHILD, GRANDCHILD):
        answer = _unit(stub, unit).org_unit
        seen.setdefault(answer.org_unit_id, set()).add(answer.name)
        for ref in (*answer.ancestors, *answer.children):
            seen.setdefault(ref.org_unit_id, set()).add(ref.name)
    return seen


@pytest.mark.timeout(60)
@pytest.mark.parametrize("renamed", [CHILD, PARENT], ids=["middle-unit", "top-unit"])
def test_renaming_a_unit_drops_every_cached_unit_that_names_it(
    renamed: str, start_service: Any, dev_wrapper: Any, redis_server: RedisProcess
) -> None:
    service: Service = start_service(service_settings(dev_wrapper.url, redis_server.url, tenants=["acme"]))
    with grpc.insecure_channel(f"127.0.0.1:{service.port}") as channel:
        stub = pb_grpc.HybridCacheStub(channel)
        before = _names_seen(stub)  # parent, child and grandchild now cached
        assert renamed in before
        assert all(_unit(stub, u).provenance.source == pb.SOURCE_CACHE for u in (PARENT, CHILD, GRANDCHILD))
        new_name = f"Renamed {renamed}"
        stream = stub.WatchChanges(
            pb.WatchChangesRequest(tenant_ids=["acme"], kinds=[pb.KIND_ORG_UNITS]), timeout=30
        )
        next(stream)  # the subscription is confirmed: the change below is delivered on it
        _rename(dev_wrapper.url, renamed, new_name)
        seen = wait_for(
            lambda: names if (names := _names_seen(stub))[renamed] == {new_name} else None,
            timeout=BOUND_S,
            what=f"every cached unit naming {renamed} to show its new name",
        )
        assert seen is not None  # wait_for returns a truthy value or fails
        assert seen[renamed] == {new_name}
        # Watchers keeping their own copies are told about every outdated unit too.
        change = next(m.change for m in stream if m.WhichOneof("message") == "change")
        stream.cancel()
        expected = {renamed} | ({PARENT, GRANDCHILD} if renamed == CHILD else {CHILD, GRANDCHILD})
        assert set(change.keys) == expected, f"the change named {list(change.keys)}, not {sorted(expected)}"
