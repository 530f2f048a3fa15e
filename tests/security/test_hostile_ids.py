"""Ids that cannot name a path: `.`/`..` and URL separators are refused at validation, and
the Wrapper URL is built so that no id could change its path even if validation let it by.

The attack this closes: `GetUserProfile(tenant_id="..", user_id="user-1")` passed validation
and httpx resolved the dot segment, so the service asked the Wrapper, with its own token,
for `GET /api/users/user-1/profile` (and `GetOrgUnit("acme", "..")` for `/api/tenants/acme`).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

import grpc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hybridcache.server import ids
from hybridcache.server.api.validation import check_key, check_permission, check_tenant_id, check_user_id
from hybridcache.server.app import Service
from hybridcache.server.core.errors import InvalidRequest, NotFound
from hybridcache.server.core.kinds import Kind
from hybridcache.server.wrapper.client import WrapperClient
from hybridcache.v1 import hybridcache_pb2 as pb
from hybridcache.v1 import hybridcache_pb2_grpc as pb_grpc
from hybridcache_dev.harness.stub_http import StubHTTP, StubRequest
from hybridcache_dev.harness.wrapper_admin import WrapperAdmin
from tests.conftest import WRAPPER_TOKEN

pytestmark = pytest.mark.timeout(120)

DOT_IDS = [".", "..", "...", "...."]
# Characters with a meaning in a URL (or a log line), one id each; none is in the table.
URL_HOSTILE = ["a/b", "/", "a%2Fb", "%2e%2e", "a?b", "a#b", "a\\b", "a b", "a\x00b", "a\nb", "a\x7fb", "é"]
CHECKS = [
    ("tenant_id", check_tenant_id),
    ("operation_code", lambda v: check_key(v, "operation_code")),
    ("user_id", check_user_id),
    ("permission", check_permission),
]


@pytest.mark.parametrize(("field", "check"), CHECKS)
@pytest.mark.parametrize("value", DOT_IDS + URL_HOSTILE)
def test_validation_refuses_dot_only_ids_and_url_characters(field: str, check: Any, value: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        check(value)
    assert raised.value.reason == "FIELD_INVALID", f"{field}={value!r}: {raised.value}"
    assert field in str(raised.value)


@pytest.mark.parametrize("value", ["a.b", ".a", "a..", "..a", "v1.2.3", "_", "-"])
def test_ids_with_dots_and_other_characters_stay_valid(value: str) -> None:
    assert check_tenant_id(value) == value
    assert check_key(value, "flag_key") == value


def test_one_table_serves_requests_filters_and_events() -> None:
    """The three former copies of the tenant pattern are gone: all read `ids`."""
    from hybridcache.server.api import watch
    from hybridcache.server.events import decode

    for module in (watch, decode):
        assert not hasattr(module, "TENANT_ID_RE"), module.__name__
        assert not hasattr(module, "TENANT_RE"), module.__name__
    assert not ids.TENANT.matches("..")
    assert ids.TENANT.matches("acme")


# --- the URL builder, whatever an id holds (validation bypassed: the core is called directly)

# Arbitrary text, with the known-hostile ids mixed in so every run tries them.
ARBITRARY_ID = st.one_of(st.sampled_from(["", *DOT_IDS, *URL_HOSTILE]), st.text(max_size=12))


class _Recorder:
    """The request targets exactly as they arrived over a real socket (answered 404)."""

    def __init__(self) -> None:
        self.paths: list[bytes] = []

    def __call__(self, request: StubRequest) -> tuple[int, bytes]:
        self.paths.append(request.target.encode("latin-1"))
        return 404, b'{"error": "not_found"}'


@pytest.fixture(scope="module")
def recorder() -> Any:
    recorder = _Recorder()
    with StubHTTP(recorder) as stub:
        recorder.url = stub.url  # type: ignore[attr-defined]
        yield recorder


@settings(max_examples=300, deadline=None)
@given(tenant=ARBITRARY_ID, key=ARBITRARY_ID)
def test_no_id_can_change_the_wrapper_path(recorder: Any, tenant: str, key: str) -> None:
    recorder.paths.clear()
    client = WrapperClient(f"{recorder.url}/base", "t")
    try:
        client.fetch_item(tenant, Kind.USER_PROFILES, key, None)
    except NotFound:
        pass
    except InvalidRequest:
        # Refused before sending: only an id that is empty or only dots may be refused.
        assert recorder.paths == []
        assert not tenant.strip(".") or not key.strip("."), (tenant, key)
        return
    finally:
        client.close()
    assert len(recorder.paths) == 1, recorder.paths
    segments = recorder.paths[0].decode("ascii").split("/")
    assert len(segments) == 8, f"an id added or removed a segment: {segments}"
    assert segments[:4] == ["", "base", "api", "tenants"], segments
    assert segments[5::2] == ["users", "profile"], segments
    assert (unquote(segments[4], errors="strict"), unquote(segments[6], errors="strict")) == (tenant, key)


@pytest.mark.parametrize("dots", ["", ".", "..", "..."])
def test_dot_segments_are_refused_before_any_request(recorder: Any, dots: str) -> None:
    recorder.paths.clear()
    client = WrapperClient(recorder.url, "t")
    with pytest.raises(InvalidRequest):
        client.fetch_item(dots, Kind.USER_PROFILES, "user-1", None)
    with pytest.raises(InvalidRequest):
        client.fetch_item("acme", Kind.ORG_UNITS, dots, None)
    with pytest.raises(InvalidRequest):
        client.fetch_snapshot(dots, Kind.CREDIT_COSTS, None)
    client.close()
    assert recorder.paths == []


# --- against the real development Wrapper over HTTP


def _recent_paths(wrapper_url: str) -> list[str]:
    with WrapperAdmin(wrapper_url, WRAPPER_TOKEN) as admin:
        return list(admin.stats()["recentPaths"])


def _reset(wrapper_url: str) -> None:
    with WrapperAdmin(wrapper_url, WRAPPER_TOKEN) as admin:
        admin.reset_stats()


HOSTILE_KEYS = {
    "a/b": "a%2Fb",
    "a?b": "a%3Fb",
    "a#b": "a%23b",
    "a\\b": "a%5Cb",
    "%2e%2e": "%252e%252e",
    "a b": "a%20b",
    "é": "%C3%A9",
    "..a": "..a",
}


def test_the_wrapper_receives_exactly_the_built_path(dev_wrapper: Any) -> None:
    client = WrapperClient(dev_wrapper.url, WRAPPER_TOKEN)
    try:
        _reset(dev_wrapper.url)
        for hostile, encoded in HOSTILE_KEYS.items():
            with pytest.raises(NotFound):
                client.fetch_item("acme", Kind.USER_PROFILES, hostile, None)
            assert _recent_paths(dev_wrapper.url)[-1] == f"/api/tenants/acme/users/{encoded}/profile"
        for dots in ("..", "."):
            with pytest.raises(InvalidRequest):
                client.fetch_item(dots, Kind.USER_PROFILES, "user-1", None)
            with pytest.raises(InvalidRequest):
                client.fetch_item("acme", Kind.ORG_UNITS, dots, None)
        assert len(_recent_paths(dev_wrapper.url)) == len(HOSTILE_KEYS), "a dot id reached the Wrapper"
    finally:
        client.close()


def test_dot_ids_over_grpc_are_invalid_and_reach_no_wrapper(service: Service, dev_wrapper: Any) -> None:
    _reset(dev_wrapper.url)
    with grpc.insecure_channel(f"127.0.0.1:{service.port}") as channel:
        stub = pb_grpc.HybridCacheStub(channel)
        calls = [
            lambda: stub.GetUserProfile(
                pb.GetUserProfileRequest(tenant_id="..", user_id="user-1"), timeout=5
            ),
            lambda: stub.GetUserProfile(pb.GetUserProfileRequest(tenant_id="acme", user_id=".."), timeout=5),
            lambda: stub.GetOrgUnit(pb.GetOrgUnitRequest(tenant_id="acme", org_unit_id=".."), timeout=5),
            lambda: stub.GetOrgUnit(pb.GetOrgUnitRequest(tenant_id="acme", org_unit_id="."), timeout=5),
            lambda: stub.GetCreditCost(pb.GetCreditCostRequest(tenant_id=".", operation_code="x"), timeout=5),
        ]
        for call in calls:
            with pytest.raises(grpc.RpcError) as raised:
                call()
            assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT, raised.value.details()
            assert "not only dots" in (raised.value.details() or "")
    leaked = [
        p for p in _recent_paths(dev_wrapper.url) if "/users/user-1/profile" in p or p == "/api/tenants/acme"
    ]
    assert leaked == [], f"the Wrapper was asked for {leaked}"


@pytest.mark.parametrize(
    "path",
    [
        "/api/tenants/../users/u", "/api/./x", "/api/%2E%2E/x", "/api/%2e/x", "/api//x", "/api/é", "api/x",
        "/api/a%2fb", "/api/a b", "/api/a\\b", "/api/a#b", "/api/a%zz", "/api/a%", "/api/a?b#c",
    ],
)  # fmt: skip
def test_a_path_the_http_client_would_rewrite_is_refused(path: str) -> None:
    """However a path was put together (a new call that forgot `segment`), `resolve` sends it
    unchanged or not at all: the target it returns is one urllib3 sends as it is."""
    from urllib3.util.url import _encode_target

    from hybridcache.server.wrapper.urls import resolve

    with pytest.raises(InvalidRequest):
        resolve("", path)
    assert resolve("/b", "/api/a%2Fb") == "/b/api/a%2Fb"
    with_query = resolve("", "/api/a/digest?kinds=x,y&from=a/..")
    assert with_query == "/api/a/digest?kinds=x,y&from=a/.."
    for target in ("/b/api/a%2Fb", with_query, "/api/tenants/%C3%A9/users/a%3Fb%23c%5C/profile"):
        assert _encode_target(target) == target, "urllib3 would rewrite an accepted target"
