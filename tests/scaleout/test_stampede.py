"""No stampede: 10 replicas lose Redis at the same moment (a restart); each resyncs every
tenant from the Wrapper. Measured: the Wrapper's peak request count in any 100 ms window,
with no resync jitter and no cap, versus the default-style jitter plus a per-process cap.

    make scaleout            # or: .venv/bin/pytest tests/scaleout -m scaleout -s -k stampede

The figures go to docs/SCALE-OUT.md. The assertion is only that jitter lowers the peak.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import pytest
import redis

from hybridcache.server.devwrapper import launch
from hybridcache.server.redis_process import RedisProcess
from tests.conftest import WRAPPER_TOKEN
from tests.scaleout.fleet import TimelineProxy, replicas, wait_until

REPLICAS = 10
# Scaled seed: tenant-0001..tenant-NNNN, 200 users and 100 operation codes each. With many
# tenants the burst outlasts the jitter window and the Wrapper's own capacity sets the peak.
TENANTS = int(os.environ.get("HC_STAMPEDE_TENANTS", "3"))
KINDS = 4  # snapshot kinds per tenant
WINDOW_S = 0.1

pytestmark = [pytest.mark.scaleout, pytest.mark.timeout(600)]


def _subscribers(redis_: RedisProcess) -> int:
    with redis_.client(socket_timeout=2) as client:
        return sum(1 for c in client.client_list() if c.get("name") == "hybridcache-events")


def _one_round(
    redis_: RedisProcess, proxy: TimelineProxy, workdir: Path, *, jitter_s: float, cap: int
) -> dict[str, float]:
    tenants = ",".join(f"tenant-{t:04d}" for t in range(1, TENANTS + 1))
    with replicas(
        REPLICAS,
        workdir,
        proxy.url,
        redis_.url,
        HYBRIDCACHE_TENANTS=tenants,
        HYBRIDCACHE_RESYNC_JITTER_S=str(jitter_s),
        HYBRIDCACHE_MAX_CONCURRENT_SNAPSHOT_LOADS=str(cap),
        HYBRIDCACHE_REFRESH_INTERVAL_S="0",
    ):
        wait_until(lambda: _subscribers(redis_) >= REPLICAS, 30, f"{REPLICAS} subscribers on Redis")
        # Let the start-up loads finish (the proxy goes quiet) before the outage.
        wait_until(lambda: proxy.count_since(time.monotonic() - 0.5) == 0, 60, "the fleet's warm-up to end")
        redis_.restart()
        outage_end = time.monotonic()
        expected = REPLICAS * TENANTS * KINDS
        wait_until(
            lambda: proxy.count_since(outage_end) >= expected,
            60,
            f"{expected} snapshot requests (every replica resyncing every tenant)",
        )
        took = [t for t in proxy.times if t >= outage_end]
        return {
            "requests": float(len(took)),
            "peak_per_100ms": float(proxy.peak(WINDOW_S, outage_end)),
            "spread_s": took[-1] - took[0],
            "last_after_s": took[-1] - outage_end,
        }


def test_jitter_and_cap_lower_the_wrappers_peak() -> None:
    with (
        tempfile.TemporaryDirectory(prefix="hc-stampede-") as tmp,
        RedisProcess() as redis_,
        launch(
            redis_.url,
            token=WRAPPER_TOKEN,
            db_path=str(Path(tmp) / "wrapper.db"),
            scale=f"{TENANTS}x200x100",
        ) as wrapper,
        TimelineProxy(wrapper.port) as proxy,
    ):
        try:
            burst = _one_round(redis_, proxy, Path(tmp), jitter_s=0.0, cap=0)
            spread = _one_round(redis_, proxy, Path(tmp), jitter_s=2.0, cap=1)
        except (AssertionError, redis.RedisError) as exc:
            logs = "\n".join(p.read_text(errors="replace")[-800:] for p in Path(tmp).glob("replica-*.log"))
            raise AssertionError(f"{exc}\nreplica logs (tails):\n{logs}") from exc
    print(f"\nstampede, {REPLICAS} replicas x {TENANTS} tenants x {KINDS} snapshots after a Redis restart:")
    print(f"  jitter 0, no cap : {burst}")
    print(f"  jitter 2 s, cap 1: {spread}")
    assert spread["peak_per_100ms"] < burst["peak_per_100ms"], (burst, spread)
