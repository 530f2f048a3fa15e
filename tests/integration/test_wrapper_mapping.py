"""The service's core cases over both Wrapper shapes, real HTTP: hybridcache's own contract
(the built-in mapping) and the design note's platform shape (`--api-shape crm` with
docs/examples/wrapper-map-crm.yaml). Snapshot load, on-demand fetch, 404s, paging over
three pages and more, version handling, through the Wrapper client and through gRPC."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import grpc
import pytest

from hybridcache.server import codec
from hybridcache.server.app import Service
from hybridcache.server.core.errors import NotFound, WrapperUnavailable
from hybridcache.server.core.kinds import Kind
from hybridcache.server.wrapper.client import WrapperClient
from hybridcache.server.wrapper.mapping import DEFAULT_MAP, WrapperMap, load_map
from hybridcache.server.wrapper.urls import UnsafeWrapperPath
from hybridcache.v1 import hybridcache_pb2 as pb
from hybridcache.v1 import hybridcache_pb2_grpc as pb_grpc
from hybridcache_dev.harness.wrapper_admin import WrapperAdmin
from hybridcache_dev.stack.redis_process import RedisProcess
from hybridcache_dev.wrapper import launch
from hybridcache_dev.wrapper.seed import demo_tenants
from hybridcache_dev.wrapper.store import Store
from tests.conftest import WRAPPER_TOKEN, service_settings
from tests.helpers import wait_for

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]
CRM_MAP = ROOT / "docs" / "examples" / "wrapper-map-crm.yaml"
REPLICATED = (Kind.CREDIT_COSTS, Kind.ROLE_PERMISSIONS, Kind.USER_STATUS, Kind.FEATURE_FLAGS)


@dataclass
class Shape:
    name: str
    url: str
    mapping: WrapperMap
    map_file: str  # "" for the built-in default


@pytest.fixture(scope="module", params=["contract", "crm"])
def shape(request: pytest.FixtureRequest, redis_server: RedisProcess) -> Iterator[Shape]:
    with tempfile.TemporaryDirectory(prefix="hybridcache-wrapper-") as tmp:
        process = launch(
            redis_server.url,
            token=WRAPPER_TOKEN,
            db_path=str(Path(tmp) / "wrapper.db"),
            publish_mode="both",
            app="crm",
            extra_args=["--api-shape", request.param],
        )
        try:
            if request.param == "crm":
                yield Shape("crm", process.url, load_map(str(CRM_MAP)), str(CRM_MAP))
            else:
                yield Shape("contract", process.url, DEFAULT_MAP, "")
        finally:
            process.stop()


@pytest.fixture
def client(shape: Shape) -> Iterator[WrapperClient]:
    wrapper = WrapperClient(shape.url, WRAPPER_TOKEN, mapping=shape.mapping, retries=0)
    yield wrapper
    wrapper.close()


@pytest.fixture(scope="module")
def truth() -> Store:
    """The seed the development Wrappers start from, in process: what every answer must equal."""
    store = Store()
    store.load(demo_tenants())
    return store


def test_snapshots_load_every_item_of_each_replicated_kind(client: WrapperClient, truth: Store) -> None:
    for kind in REPLICATED:
        snapshot = client.fetch_snapshot("acme", kind, None)
        expected = {
            str(raw[codec.KEY_FIELD[kind]]): codec.parse_item(kind, raw)
            for raw in truth.snapshot("acme", kind)["items"]
        }
        assert snapshot.items == expected, f"{kind}: the snapshot differs from the Wrapper's data"
        assert snapshot.revision == truth.revision("acme"), f"{kind}: wrong revision"


def test_lists_page_through_three_pages_or_more(shape: Shape, client: WrapperClient, truth: Store) -> None:
    for kind in (Kind.CREDIT_COSTS, Kind.USER_STATUS):
        before = client.pages_loaded
        snapshot = client.fetch_snapshot("globex", kind, None)
        pages = client.pages_loaded - before
        assert len(snapshot.items) == len(truth.snapshot("globex", kind)["items"])
        if shape.name == "crm":  # pages of 5 (the mapping's limit)
            assert len(snapshot.items) > 10, "the seed is too small to need three pages"
            assert pages >= 3, f"{kind}: {pages} pages for {len(snapshot.items)} items in pages of 5"
        else:
            assert pages == 1


def test_on_demand_fetches_answer_the_wrappers_values(client: WrapperClient, truth: Store) -> None:
    for kind, key in (
        (Kind.USER_PROFILES, "user-12"),
        (Kind.ORG_UNITS, "org-sales"),
        (Kind.CREDIT_COSTS, "crm.leads.create"),
    ):
        got = client.fetch_item("acme", kind, key, None)
        assert got == codec.parse_item(kind, truth.item("acme", kind, key)), f"{kind} {key}"


def test_absent_items_and_tenants_are_told_apart(client: WrapperClient) -> None:
    with pytest.raises(NotFound) as absent:
        client.fetch_item("acme", Kind.CREDIT_COSTS, "no.such.operation", None)
    assert absent.value.reason == "NOT_FOUND"
    with pytest.raises(NotFound) as tenant:
        client.fetch_item("no-such-tenant", Kind.CREDIT_COSTS, "crm.leads.create", None)
    assert tenant.value.reason == "TENANT_NOT_FOUND"


def test_ids_fill_one_segment_and_never_change_the_path(shape: Shape, client: WrapperClient) -> None:
    with WrapperAdmin(shape.url, WRAPPER_TOKEN) as admin:
        admin.reset_stats()

    def sent() -> list[bytes]:  # the paths as the Wrapper received them
        with WrapperAdmin(shape.url, WRAPPER_TOKEN) as admin:
            return [path.encode() for path in admin.stats()["recentPaths"]]

    # What the Wrapper makes of an encoded slash is its own business (docs/WRAPPER.md).
    with contextlib.suppress(NotFound, WrapperUnavailable):
        client.fetch_item("acme", Kind.USER_PROFILES, "user-12/status?x#y", None)
    (path,) = sent()
    assert b"user-12%2Fstatus%3Fx%23y" in path, f"the id was not one encoded segment: {path!r}"
    assert b"?" not in path.split(b"user-12")[0], "an id may not start a query string"
    for hostile in ("..", "."):
        with pytest.raises(UnsafeWrapperPath):
            client.fetch_item("acme", Kind.CREDIT_COSTS, hostile, None)
        with pytest.raises(UnsafeWrapperPath):
            client.fetch_snapshot(hostile, Kind.CREDIT_COSTS, None)
    assert len(sent()) == 1, "a refused id sent no request"


def _put_cost(shape: Shape, code: str, cost: str) -> None:
    with WrapperAdmin(shape.url, WRAPPER_TOKEN) as admin:
        admin.put_cost("acme", code, cost)


def test_a_change_raises_the_version_and_the_revision(shape: Shape, client: WrapperClient) -> None:
    code = "crm.leads.create"
    before = client.fetch_snapshot("acme", Kind.CREDIT_COSTS, None)
    _put_cost(shape, code, "11.5")
    after = client.fetch_snapshot("acme", Kind.CREDIT_COSTS, None)
    assert after.revision > before.revision
    assert after.items[code].version > before.items[code].version
    assert client.fetch_item("acme", Kind.CREDIT_COSTS, code, None) == after.items[code]


def test_the_service_over_the_mapping(
    shape: Shape, start_service: Callable[..., Service], redis_server: RedisProcess
) -> None:
    """Start-up snapshot load, a replicated read, an on-demand read, NOT_FOUND, and a change
    that reaches the answer by its notification, all through gRPC."""
    settings = service_settings(shape.url, redis_server.url, wrapper_map=shape.map_file)
    service = start_service(settings)  # SERVING: acme and globex loaded through the mapping
    with grpc.insecure_channel(f"127.0.0.1:{service.port}") as channel:
        stub = pb_grpc.HybridCacheStub(channel)
        cost = stub.GetCreditCost(
            pb.GetCreditCostRequest(tenant_id="acme", operation_code="crm.deals.close"), timeout=5
        )
        assert cost.provenance.source == pb.SOURCE_CACHE, "a replicated kind answers from the snapshot"
        profile = stub.GetUserProfile(
            pb.GetUserProfileRequest(tenant_id="acme", user_id="user-12"), timeout=5
        )
        assert profile.provenance.source == pb.SOURCE_WRAPPER
        assert profile.user_profile.display_name, "the profile's mapped fields are filled"
        with pytest.raises(grpc.RpcError) as absent:
            stub.GetUserProfile(pb.GetUserProfileRequest(tenant_id="acme", user_id="user-nobody"), timeout=5)
        assert absent.value.code() == grpc.StatusCode.NOT_FOUND
        _put_cost(shape, "crm.deals.close", "42.25")
        request = pb.GetCreditCostRequest(tenant_id="acme", operation_code="crm.deals.close")
        wait_for(
            lambda: (
                Decimal(stub.GetCreditCost(request, timeout=5).credit_cost.cost.value) == Decimal("42.25")
            ),
            timeout=10,
            what="the changed cost to reach the answer",
        )
