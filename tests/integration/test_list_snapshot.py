"""ListSnapshot over a real server: the snapshot equals the Wrapper's truth, WatchChanges from
its token delivers exactly the changes after it, and a caller of another tenant is refused."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import httpx
import pytest

from hybridcache.server.api.auth import token_sha256
from hybridcache.server.app import Service
from hybridcache.v1 import hybridcache_pb2 as pb
from hybridcache.v1 import hybridcache_pb2_grpc as pb_grpc
from hybridcache_dev.harness.wrapper_admin import WrapperAdmin
from hybridcache_dev.stack.redis_process import RedisProcess
from tests.conftest import WRAPPER_TOKEN, service_settings
from tests.helpers import wait_for

pytestmark = pytest.mark.timeout(90)

ACME_TOKEN = "snapshot-acme-token"
GLOBEX_TOKEN = "snapshot-globex-token"
CALLERS = [
    {"name": "crm-acme", "token_sha256": token_sha256(ACME_TOKEN), "tenants": ["acme"]},
    {"name": "crm-globex", "token_sha256": token_sha256(GLOBEX_TOKEN), "tenants": ["globex"]},
]
ACME = (("authorization", f"Bearer {ACME_TOKEN}"),)
GLOBEX = (("authorization", f"Bearer {GLOBEX_TOKEN}"),)
WRAPPER_KINDS = {  # kind -> (the Wrapper's snapshot path, its key field)
    pb.KIND_CREDIT_COSTS: ("credit-costs", "operationCode"),
    pb.KIND_ROLE_PERMISSIONS: ("role-permissions", "roleId"),
    pb.KIND_USER_STATUS: ("user-status", "userId"),
    pb.KIND_FEATURE_FLAGS: ("feature-flags", "flagKey"),
}


@pytest.fixture
def secure_stub(
    start_service: Callable[..., Service], dev_wrapper: Any, redis_server: RedisProcess
) -> Iterator[pb_grpc.HybridCacheStub]:
    service = start_service(
        service_settings(dev_wrapper.url, redis_server.url, insecure_dev_mode=False, callers=CALLERS)
    )
    with grpc.insecure_channel(f"127.0.0.1:{service.port}") as channel:
        yield pb_grpc.HybridCacheStub(channel)


def snapshot(stub: pb_grpc.HybridCacheStub, tenant: str, **fields: Any) -> list[pb.ListSnapshotResponse]:
    request = pb.ListSnapshotRequest(tenant_id=tenant, **fields)
    return list(stub.ListSnapshot(request, metadata=ACME if tenant == "acme" else GLOBEX, timeout=20))


def as_plain(item: pb.SnapshotItem) -> tuple[int, str, int, tuple[Any, ...]]:
    """An item as comparable data: (kind, key, version, value fields)."""
    which = item.WhichOneof("value")
    if which == "credit_cost":
        value: tuple[Any, ...] = (item.credit_cost.cost.value,)
    elif which == "role_permissions":
        value = (tuple(sorted(item.role_permissions.permissions)),)
    elif which == "user_status":
        value = (item.user_status.active, tuple(item.user_status.role_ids))
    else:
        value = (item.feature_flag.enabled, item.feature_flag.value)
    return item.kind, item.key, item.version, value


def wrapper_truth(dev_wrapper: Any, tenant: str) -> set[tuple[Any, ...]]:
    truth = set()
    for kind, (path, key_field) in WRAPPER_KINDS.items():
        body = httpx.get(
            f"{dev_wrapper.url}/api/tenants/{tenant}/snapshots/{path}",
            headers=dev_wrapper.headers,
            timeout=10,
        ).json()
        for raw in body["items"]:
            if kind == pb.KIND_CREDIT_COSTS:
                value: tuple[Any, ...] = (raw["cost"],)
            elif kind == pb.KIND_ROLE_PERMISSIONS:
                value = (tuple(sorted(raw["permissions"])),)
            elif kind == pb.KIND_USER_STATUS:
                value = (raw["active"], tuple(raw["roles"]))
            else:
                value = (raw["enabled"], raw.get("value", ""))
            truth.add((kind, raw[key_field], raw["version"], value))
    return truth


def set_cost(dev_wrapper: Any, tenant: str, code: str, cost: str) -> None:
    with WrapperAdmin(dev_wrapper.url, WRAPPER_TOKEN) as admin:
        admin.put_cost(tenant, code, cost)


class Watch:
    """A WatchChanges stream read on a thread: its changes land in a queue."""

    def __init__(self, stub: pb_grpc.HybridCacheStub, request: pb.WatchChangesRequest) -> None:
        self.events: queue.Queue[pb.ChangeEvent | str] = queue.Queue()
        self._call = stub.WatchChanges(request, metadata=ACME, timeout=60)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for message in self._call:
                which = message.WhichOneof("message")
                if which == "change":
                    self.events.put(message.change)
                elif which == "changes":
                    for event in message.changes.events:
                        self.events.put(event)
                elif which == "resync_required":
                    self.events.put(f"resync: {message.resync_required.reason}")
        except grpc.RpcError:
            pass

    def next_change(self, timeout: float) -> pb.ChangeEvent | str | None:
        try:
            return self.events.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        self._call.cancel()
        self._thread.join(5)


def test_the_snapshot_is_the_wrappers_truth_in_bounded_pages(
    secure_stub: pb_grpc.HybridCacheStub, dev_wrapper: Any
) -> None:
    pages = snapshot(secure_stub, "acme", page_size=3)
    items = [item for page in pages for item in page.items]
    assert all(len(page.items) <= 3 for page in pages), "a page is larger than the page_size asked for"
    assert len(pages) > 1, "a tenant of more than 3 items came as one message"
    assert [page.last for page in pages] == [False] * (len(pages) - 1) + [True], "only the last is last"
    final = pages[-1]
    assert final.resume_token, "the last message carries no resume token"
    assert final.total_items == len(items)
    assert final.provenance.source == pb.SOURCE_CACHE
    kinds = {item.kind for item in items}
    assert kinds == set(WRAPPER_KINDS), f"the snapshot lacks kinds: {set(WRAPPER_KINDS) - kinds}"
    roles = [item for item in items if item.kind == pb.KIND_ROLE_PERMISSIONS]
    assert roles, "the snapshot holds no roles"
    assert all(item.role_permissions.permissions for item in roles), "roles came without grants"
    assert {as_plain(item) for item in items} == wrapper_truth(dev_wrapper, "acme")

    only_flags = snapshot(secure_stub, "acme", kinds=[pb.KIND_FEATURE_FLAGS])
    assert {item.kind for page in only_flags for item in page.items} == {pb.KIND_FEATURE_FLAGS}


def test_watch_from_the_token_delivers_changes_after_it_once_and_none_before(
    secure_stub: pb_grpc.HybridCacheStub, dev_wrapper: Any
) -> None:
    set_cost(dev_wrapper, "acme", "crm.leads.create", "41.5")  # before the snapshot

    # The change is in the snapshot once the server applied it: poll until a snapshot holds it.
    def snapshot_with_the_change() -> list[pb.ListSnapshotResponse] | None:
        pages = snapshot(secure_stub, "acme", kinds=[pb.KIND_CREDIT_COSTS])
        costs = {item.key: item.credit_cost.cost.value for page in pages for item in page.items}
        return pages if costs.get("crm.leads.create") == "41.5" else None

    pages = wait_for(snapshot_with_the_change, timeout=15, what="the change made before the snapshot in it")
    assert pages is not None  # wait_for returns a truthy value or fails
    token = pages[-1].resume_token
    watch = Watch(secure_stub, pb.WatchChangesRequest(tenant_ids=["acme"], resume_token=token))
    try:
        set_cost(dev_wrapper, "acme", "crm.leads.read", "42.5")  # after the snapshot
        first = watch.next_change(timeout=15)
        assert isinstance(first, pb.ChangeEvent), f"expected the change after the snapshot, got {first!r}"
        assert list(first.keys) == ["crm.leads.read"], f"a change from before the snapshot came: {first}"
        assert first.credit_cost.cost.value == "42.5"
        set_cost(dev_wrapper, "acme", "crm.contacts.export", "43.5")  # a marker: nothing in between
        second = watch.next_change(timeout=15)
        assert isinstance(second, pb.ChangeEvent), f"expected the marker change, got {second!r}"
        assert list(second.keys) == ["crm.contacts.export"], (
            f"the change came twice, or another came: {second}"
        )
    finally:
        watch.close()


def test_a_caller_of_another_tenant_is_refused(secure_stub: pb_grpc.HybridCacheStub) -> None:
    request = pb.ListSnapshotRequest(tenant_id="acme")
    with pytest.raises(grpc.RpcError) as refused:
        list(secure_stub.ListSnapshot(request, metadata=GLOBEX, timeout=10))
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as anonymous:
        list(secure_stub.ListSnapshot(request, timeout=10))
    assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize(
    ("fields", "needle"),
    [({"page_size": 5001}, "page_size"), ({"kinds": [pb.KIND_USER_PROFILES]}, "not a replicated kind")],
)
def test_bad_requests_are_invalid_argument(
    secure_stub: pb_grpc.HybridCacheStub, fields: dict[str, Any], needle: str
) -> None:
    with pytest.raises(grpc.RpcError) as bad:
        snapshot(secure_stub, "acme", **fields)
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert needle in (bad.value.details() or "")


def test_a_kind_served_on_demand_is_left_out_or_refused(
    start_service: Callable[..., Service], dev_wrapper: Any, redis_server: RedisProcess
) -> None:
    settings = service_settings(
        dev_wrapper.url, redis_server.url, kind_policies='{"feature-flags": {"tier": "on-demand"}}'
    )
    service = start_service(settings)
    with grpc.insecure_channel(f"127.0.0.1:{service.port}") as channel:
        stub = pb_grpc.HybridCacheStub(channel)
        pages = list(stub.ListSnapshot(pb.ListSnapshotRequest(tenant_id="acme"), timeout=20))
        kinds = {item.kind for page in pages for item in page.items}
        assert kinds == set(WRAPPER_KINDS) - {pb.KIND_FEATURE_FLAGS}, f"kinds listed: {kinds}"
        assert set(pages[-1].kinds) == kinds, "the last page does not name the kinds held"
        request = pb.ListSnapshotRequest(tenant_id="acme", kinds=[pb.KIND_FEATURE_FLAGS])
        with pytest.raises(grpc.RpcError) as refused:
            list(stub.ListSnapshot(request, timeout=20))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "not replicated" in (refused.value.details() or "")
