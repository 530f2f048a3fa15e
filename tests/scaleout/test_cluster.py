"""Redis Cluster: 3 masters started by the test (`--cluster-enabled yes`, `redis-cli --cluster
create`). What is shown here:

* pub/sub mode: the service subscribes (PSUBSCRIBE, classic pub/sub) on one node while the
  Wrapper publishes on another: classic pub/sub is cluster-wide (every node forwards a
  PUBLISH over the cluster bus to its own subscribers), so any node will do. Sharded pub/sub
  (SSUBSCRIBE/SPUBLISH, Redis 7.0+) is not used: it has no pattern form, and the channels
  carry the tenant (`crm:{tenant}:{event}`), so it would need one subscription per tenant
  and event type on each slot's owner, and the Wrapper's publishers to use SPUBLISH.
* stream (durable) mode: the stream key `{crm}:changes` hashes by its tag `crm` to one slot;
  the service reads it from the node that owns that slot (its URL names that node).

Left out (docs/SCALE-OUT.md): following MOVED redirects (a cluster-aware client for the
stream reader), so a resharding of that slot or a failover of its master needs the URL
changed (or a Sentinel-style indirection).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from decimal import Decimal
from pathlib import Path

import pytest
import redis

from hybridcache.server.app import create_service
from hybridcache.server.ops.readiness import wait_serving
from hybridcache_dev.wrapper import launch
from tests.conftest import WRAPPER_TOKEN, service_settings
from tests.faults.stack import WrapperAdmin
from tests.redis_server import RedisServer, free_port
from tests.scaleout.fleet import wait_until
from tests.scaleout.scenario import TENANT, answers_of, codes_of, truth

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(shutil.which("redis-cli") is None, reason="redis-cli is needed to create a cluster"),
]

STREAM_KEY = "{crm}:changes"


@contextmanager
def cluster(masters: int = 3) -> Iterator[list[RedisServer]]:
    with ExitStack() as stack:
        nodes = [
            stack.enter_context(
                RedisServer(
                    extra_args=(
                        "--cluster-enabled",
                        "yes",
                        "--cluster-node-timeout",
                        "2000",
                        # The bus port, explicit: the default (port + 10000) overflows for high ports.
                        "--cluster-port",
                        str(free_port()),
                    )
                )
            )
            for _ in range(masters)
        ]
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *(f"127.0.0.1:{n.port}" for n in nodes),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )

        def ok() -> bool:
            for node in nodes:
                with node.client(decode_responses=True) as client:
                    info = client.execute_command("CLUSTER", "INFO")
                    if "cluster_state:ok" not in info:
                        return False
            return True

        wait_until(ok, 30, "cluster_state:ok on every node")
        yield nodes


def slot_owner(nodes: list[RedisServer], key: str) -> RedisServer:
    with nodes[0].client() as client:
        slot = int(client.execute_command("CLUSTER", "KEYSLOT", key))
        for start, end, master, *_ in client.execute_command("CLUSTER", "SLOTS"):
            if int(start) <= slot <= int(end):
                port = int(master[1])
                return next(n for n in nodes if n.port == port)
    raise AssertionError(f"no node owns the slot of {key}")


def test_pubsub_on_any_node_and_the_stream_on_its_slot() -> None:
    with tempfile.TemporaryDirectory(prefix="hc-cluster-") as tmp, cluster() as nodes:
        owner = slot_owner(nodes, STREAM_KEY)
        elsewhere = next(n for n in nodes if n is not owner)
        # The Wrapper publishes (PUBLISH + XADD) on the stream's slot owner.
        with launch(
            owner.url, token=WRAPPER_TOKEN, db_path=str(Path(tmp) / "w.db"), publish_mode="both"
        ) as wrapper:
            admin = WrapperAdmin(wrapper.url)
            services = {
                # PSUBSCRIBE on a node that is not the publisher's: cluster-wide delivery.
                "pubsub": create_service(service_settings(wrapper.url, elsewhere.url, tenants=[TENANT])),
                "stream": create_service(
                    service_settings(wrapper.url, owner.url, tenants=[TENANT], event_mode="stream")
                ),
            }
            try:
                targets = {mode: f"127.0.0.1:{s.port}" for mode, s in services.items()}
                for target in targets.values():
                    wait_serving(target, timeout=30)
                wait_until(
                    lambda: all(s.freshness() == "live" for s in services.values()), 15, "both readers live"
                )
                codes = codes_of(admin)
                changed_at = time.monotonic()
                assert admin.put_cost(TENANT, codes[0], "31.75")["published"]
                expected = truth(admin, codes)
                assert expected[codes[0]] == Decimal("31.75")
                for mode, target in targets.items():

                    def matches(on: str = target) -> bool:
                        return answers_of(on, codes) == expected

                    wait_until(
                        matches, 5, f"the {mode} service to see a change published on another cluster node"
                    )
                took = time.monotonic() - changed_at
                with owner.client() as client:
                    assert client.xlen(STREAM_KEY) >= 1
                with elsewhere.client() as client, pytest.raises(redis.exceptions.MovedError):
                    client.xlen(STREAM_KEY)  # the stream lives on its slot's node only
                print(f"\ncluster: both modes followed a change in {took:.3f} s")
            finally:
                for service in services.values():
                    service.stop(0)
                admin.close()
