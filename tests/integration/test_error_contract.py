"""The error contract over real parts: the development Wrapper (HTTP) refusing the service's
credentials is a configuration fault, reported at once as INTERNAL / WRAPPER_REJECTED, and
neither the server nor the shipped client retries it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest

from hybridcache.client import ClientConfig, HybridCacheClient, Internal, Reason
from hybridcache.server.app import Service
from hybridcache.server.config import Settings
from hybridcache_dev.stack.redis_process import RedisProcess
from tests.conftest import WRAPPER_TOKEN, service_settings
from tests.faults.stack import WrapperAdmin

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def admin(dev_wrapper: Any) -> Iterator[WrapperAdmin]:
    wrapper_admin = WrapperAdmin(dev_wrapper.url, WRAPPER_TOKEN)
    wrapper_admin.reset_stats()
    yield wrapper_admin
    wrapper_admin.clear_faults()
    wrapper_admin.close()


def _profile_requests(admin: WrapperAdmin) -> dict[str, int]:
    requests: dict[str, int] = admin.stats()["requests"]
    return {route: count for route, count in requests.items() if route.endswith("/profile")}


@pytest.fixture
def start(
    start_service: Callable[[Settings], Service], dev_wrapper: Any, redis_server: RedisProcess
) -> Callable[[str], Service]:
    def start_with_token(token: str) -> Service:
        return start_service(
            service_settings(dev_wrapper.url, redis_server.url, tenants=[], wrapper_token=token)
        )

    return start_with_token


@pytest.mark.parametrize(
    ("status", "token", "faults"),
    [
        pytest.param(401, "not-the-wrapper-token", {}, id="401-wrong-token"),
        pytest.param(403, WRAPPER_TOKEN, {"failStatus": 403}, id="403-refused"),
    ],
)
def test_wrapper_refusing_our_credentials_is_internal_and_never_retried(
    status: int, token: str, faults: dict[str, Any], start: Callable[[str], Service], admin: WrapperAdmin
) -> None:
    service = start(token)
    if faults:
        admin.set_faults(**faults)
    admin.reset_stats()
    # The shipped client with its default retry policy (4 attempts of UNAVAILABLE).
    target = f"127.0.0.1:{service.port}"
    with (
        HybridCacheClient(target, ClientConfig(default_timeout=5.0)) as client,
        pytest.raises(Internal) as caught,
    ):
        client.get_user_profile("acme", "user-1")
    error = caught.value
    assert error.code is grpc.StatusCode.INTERNAL, f"HTTP {status} from the Wrapper came back as {error.code}"
    assert error.reason is Reason.WRAPPER_REJECTED, f"reason {error.reason!r}"
    assert f"HTTP {status}" in error.message
    calls = _profile_requests(admin)
    assert sum(calls.values()) == 1, (
        f"the Wrapper was asked {calls}: a refused credential must not be retried"
    )
