"""Replicas + client failover: 3 `hybridcache serve` processes, one Redis, the development
Wrapper. Load goes through `HybridCacheClient([a1, a2, a3])` (round_robin); a consumer's
`watch()` runs on one replica; that replica is SIGKILLed. Expected: no call fails (gRPC
retries UNAVAILABLE on another replica, by the client's service config), the watch
reconnects to another replica, gets RESYNC_REQUIRED ("unknown server instance": a token
of the dead instance), reloads, and then follows a change to the Wrapper's truth.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from hybridcache.client import ClientConfig, HybridCacheClient
from hybridcache_dev.stack.redis_process import RedisProcess
from hybridcache_dev.wrapper import launch
from tests.conftest import WRAPPER_TOKEN
from tests.faults.stack import WrapperAdmin
from tests.scaleout.fleet import log_tail, replicas, wait_until
from tests.scaleout.scenario import (
    TENANT,
    Consumer,
    LoadDriver,
    answers_of,
    codes_of,
    instance_of,
    truth,
)

pytestmark = pytest.mark.timeout(120)

CONVERGE_S = 5.0  # a change reaches the consumer and every live replica within this


@contextlib.contextmanager
def _stack() -> Iterator[tuple[RedisProcess, WrapperAdmin, str, Path]]:
    with (
        tempfile.TemporaryDirectory(prefix="hc-failover-") as tmp,
        RedisProcess() as redis_,
        launch(redis_.url, token=WRAPPER_TOKEN, db_path=str(Path(tmp) / "wrapper.db")) as wrapper,
    ):
        admin = WrapperAdmin(wrapper.url)
        try:
            yield redis_, admin, wrapper.url, Path(tmp)
        finally:
            admin.close()


def test_a_replica_dies_calls_go_on_and_the_watch_fails_over_and_converges() -> None:
    with (
        _stack() as (redis_, admin, wrapper_url, workdir),
        replicas(3, workdir, wrapper_url, redis_.url) as fleet,
    ):
        codes = codes_of(admin)
        instances = {instance_of(s.target): s for s in fleet}
        assert len(instances) == 3, "each replica has its own hub instance"
        addresses = [s.target for s in fleet]
        config = ClientConfig(default_timeout=5.0)  # generous: this 2-core machine stalls under load
        with (
            HybridCacheClient(addresses, config) as load_client,
            HybridCacheClient(addresses, config) as watch_client,
        ):
            load = LoadDriver(load_client, codes).start()
            consumer = Consumer(watch_client, codes).start()
            try:
                wait_until(lambda: consumer.instance is not None, 10, "the consumer's first stream message")
                victim = instances[str(consumer.instance)]
                wait_until(lambda: len(load.answers) >= 50, 10, "some load before the kill")

                assert victim.process is not None
                victim.process.kill()  # SIGKILL: no goodbye, connections reset
                killed_at = time.monotonic()
                victim.process.wait(5)

                wait_until(lambda: consumer.resyncs, 15, "RESYNC_REQUIRED on the consumer's watch")
                resync_at, reason = consumer.resyncs[0]
                assert reason == "unknown server instance", reason
                assert consumer.instance in instances
                assert instances[str(consumer.instance)] is not victim, "the watch moved to a live replica"

                # A change after the failover reaches the consumer and every live replica.
                changed_at = time.monotonic()
                admin.put_cost(TENANT, codes[0], "77.25")
                expected = truth(admin, codes)
                assert expected[codes[0]] == Decimal("77.25")
                wait_until(
                    lambda: consumer.snapshot() == expected, CONVERGE_S, "the consumer to match the Wrapper"
                )
                live = [s for s in fleet if s is not victim]
                for server in live:

                    def matches(target: str = server.target) -> bool:
                        return answers_of(target, codes) == expected

                    wait_until(matches, CONVERGE_S, f"replica {server.target} to match the Wrapper")
                converged = time.monotonic() - changed_at
                after = len(load.answers)
                wait_until(lambda: len(load.answers) >= after + 50, 10, "more load after the change")
            finally:
                load.stop()
                consumer.close()
        failures = load.failures()
        assert not failures, (
            f"{len(failures)} calls failed, first sent {failures[0].sent - killed_at:+.2f} s from the kill, "
            f"took {failures[0].took:.2f} s: {failures[0].error}\n" + "\n".join(log_tail(s) for s in fleet)
        )
        late = [a for a in load.answers if a.sent > changed_at + converged and a.value != expected[a.code]]
        assert not late, f"answers after convergence differ from the Wrapper: {late[:3]}"
        print(
            f"\nfailover: {len(load.answers)} calls, 0 failed; watch resync "
            f"{resync_at - killed_at:.2f} s after the kill; change converged in {converged:.3f} s"
        )
