"""Redis hardening: the service works as an ACL user confined to reading its own channels.

The ACL lines are the ones the README shows (`acl_lines`), so the documentation is tested.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import grpc
import pytest
import redis

from hybridcache.server.app import Service
from hybridcache.server.events.stream_reader import stream_key
from hybridcache.server.events.subscriber import default_patterns
from hybridcache.v1 import hybridcache_pb2 as pb
from hybridcache.v1 import hybridcache_pb2_grpc as pb_grpc
from hybridcache_dev.harness.wrapper_admin import WrapperAdmin
from hybridcache_dev.stack.redis_process import RedisProcess
from hybridcache_dev.wrapper import launch
from tests.conftest import WRAPPER_TOKEN, service_settings
from tests.helpers import wait_for

pytestmark = pytest.mark.timeout(90)
README = Path(__file__).resolve().parents[2] / "README.md"


def acl_lines(app: str = "crm") -> dict[str, str]:
    """The subscriber's and the publisher's ACL rules (as documented in the README)."""
    channels = " ".join(f"&{pattern}" for pattern in default_patterns([app]))
    return {
        "subscriber": (
            f"resetchannels {channels} -@all +psubscribe +punsubscribe +ping +client|setname "
            f"~{stream_key(app)} +xread +xinfo|stream +xrange"
        ),
        "publisher": f"resetchannels &{app}:* -@all +publish +ping ~{stream_key(app)} +xadd",
    }


def test_readme_shows_these_acl_rules() -> None:
    readme = README.read_text()
    for rules in acl_lines().values():
        assert rules in readme, f"README lacks the ACL rules: {rules}"


@pytest.mark.parametrize("mode", ["pubsub", "stream"])
def test_service_works_as_a_confined_acl_user(
    own_redis: RedisProcess, start_service: Callable[..., Service], mode: str
) -> None:
    rules = acl_lines()
    with own_redis.client() as admin:
        admin.execute_command("ACL", "SETUSER", "hc-reader", "on", ">reader-pw", *rules["subscriber"].split())
        admin.execute_command(
            "ACL", "SETUSER", "hc-publisher", "on", ">publisher-pw", *rules["publisher"].split()
        )
    reader_url = f"redis://hc-reader:reader-pw@127.0.0.1:{own_redis.port}/0"
    publisher_url = f"redis://hc-publisher:publisher-pw@127.0.0.1:{own_redis.port}/0"

    with redis.Redis.from_url(reader_url) as confined:  # the confinement is real
        with pytest.raises(redis.exceptions.NoPermissionError):
            confined.publish("crm:acme:credit-config-changed", "{}")
        with pytest.raises(redis.exceptions.NoPermissionError):
            confined.get("anything")

    with tempfile.TemporaryDirectory(prefix="hybridcache-acl-") as tmp:
        wrapper = launch(
            publisher_url, token=WRAPPER_TOKEN, db_path=str(Path(tmp) / "w.db"), publish_mode="both"
        )
        try:
            service = start_service(service_settings(wrapper.url, reader_url, event_mode=mode))
            wait_for(
                lambda: service.freshness() == "live", timeout=15, what=f"{mode} reader live as the ACL user"
            )
            with WrapperAdmin(wrapper.url, WRAPPER_TOKEN) as admin:
                admin.put_cost("acme", "crm.leads.create", "12.5")
            with grpc.insecure_channel(f"127.0.0.1:{service.port}") as channel:
                stub = pb_grpc.HybridCacheStub(channel)
                request = pb.GetCreditCostRequest(tenant_id="acme", operation_code="crm.leads.create")
                wait_for(
                    lambda: (
                        Decimal(stub.GetCreditCost(request, timeout=5).credit_cost.cost.value)
                        == Decimal("12.5")
                    ),
                    timeout=5,
                    what="the change applied through the confined reader",
                )
        finally:
            wrapper.stop()
