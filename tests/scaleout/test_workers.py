"""Workers on one host: `HYBRIDCACHE_WORKERS=N` runs N full replicas on one port (SO_REUSEPORT).

* default run: 2 workers answer on one port (distinct hub instances seen over fresh
  connections), SIGTERM stops them all, a bad combination is refused at start;
* `-m scaleout`: cache-hit throughput through 2 client processes, 1 worker vs 2.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from hybridcache.v1 import hybridcache_pb2 as pb
from hybridcache_dev.bench.loadgen import Call, LoadPool, serialized
from hybridcache_dev.bench.stats import Summary
from hybridcache_dev.harness.serve_process import ServeProcess
from hybridcache_dev.stack.redis_process import RedisProcess, free_port
from hybridcache_dev.wrapper import launch
from tests.conftest import WRAPPER_TOKEN
from tests.scaleout.fleet import replica_env, wait_until
from tests.scaleout.scenario import instance_of


def _port_closed(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) != 0


def _standalone_workers_env(port: int, **extra: str) -> dict[str, str]:
    """Two workers with no tenant to load: SERVING at once, so neither the Wrapper nor Redis
    is needed (the subscriber retries in the background against a closed port)."""
    nowhere = f"127.0.0.1:{free_port()}"
    return replica_env(
        f"http://{nowhere}",
        f"redis://{nowhere}/0",
        port,
        HYBRIDCACHE_WORKERS="2",
        HYBRIDCACHE_TENANTS="",
        **extra,
    )


@pytest.mark.timeout(120)
def test_two_workers_share_one_port_and_stop_together() -> None:
    with tempfile.TemporaryDirectory(prefix="hc-workers-") as tmp:
        port = free_port()
        server = ServeProcess(_standalone_workers_env(port), Path(tmp) / "workers.log")
        server.start(timeout=60)
        try:
            seen: set[str] = set()
            # The kernel picks a worker per connection (hash of the 4-tuple): fresh
            # connections reach both soon. Bounded: 40 connections.
            for _ in range(40):
                seen.add(instance_of(server.target))
                if len(seen) == 2:
                    break
            # Both must also be SERVING (each loaded its replica) before this is a fleet.
            assert len(seen) == 2, f"only {len(seen)} worker answered over 40 connections"
        finally:
            server.stop(timeout=20)
        assert server.process is not None
        assert server.process.returncode == 0, server.log_path.read_text()[-2000:]
        wait_until(lambda: _port_closed(port), 10, "every worker to have left the port")


@pytest.mark.timeout(120)
def test_a_worker_that_dies_takes_the_set_down() -> None:
    """Worker 1 cannot bind its metrics port (METRICS_PORT + 1 is taken): the supervisor
    stops worker 0 and exits non-zero, for the process manager to restart the set."""
    with tempfile.TemporaryDirectory(prefix="hc-workers-") as tmp, socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        metrics_port = taken.getsockname()[1] - 1
        port = free_port()
        env = _standalone_workers_env(port, HYBRIDCACHE_METRICS_PORT=str(metrics_port))
        server = ServeProcess(env, Path(tmp) / "workers.log").start(wait=False)
        try:
            status = server.wait(60)
        finally:
            server.stop()
        log = server.log_path.read_text(errors="replace")
        assert status != 0, log[-2000:]
        assert "worker 1 exited" in log, log[-2000:]
        wait_until(lambda: _port_closed(port), 10, "worker 0 to have left the port")


@pytest.mark.timeout(120)
def test_workers_are_given_the_drain_and_the_grace_period_before_a_kill() -> None:
    """SIGTERM: each worker stays NOT_SERVING for HYBRIDCACHE_DRAIN_S, then has
    HYBRIDCACHE_GRACE_S for calls in flight; the supervisor must wait for both (and a margin)
    before it kills. Here the drain (7 s) outlasts grace + the margin (0.5 + 5 s)."""
    with tempfile.TemporaryDirectory(prefix="hc-workers-") as tmp:
        port = free_port()
        env = _standalone_workers_env(
            port,
            HYBRIDCACHE_DRAIN_S="7",
            HYBRIDCACHE_GRACE_S="0.5",
            HYBRIDCACHE_LOG_FORMAT="json",
            HYBRIDCACHE_LOG_LEVEL="info",  # each worker logs "stopped" after a clean stop
        )
        server = ServeProcess(env, Path(tmp) / "workers.log").start(timeout=60)
        # start() returns when the port answers, i.e. when the FIRST worker serves; a worker
        # still starting when SIGTERM comes has no drain to give yet (seen in a CI-like run).
        wait_until(
            lambda: server.log_path.read_text(errors="replace").count('"event": "serving"') >= 2,
            60,
            "both workers to serve",
        )
        server.sigterm()
        try:
            status = server.wait(60)
        finally:
            server.stop()
        log = server.log_path.read_text(errors="replace")
        stopped = sum('"event": "stopped"' in line for line in log.splitlines())
        assert status == 0, log[-2000:]
        assert stopped == 2, f"{stopped} of 2 workers stopped cleanly (others killed): {log[-3000:]}"


def test_workers_need_a_fixed_port() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "hybridcache.server.cli", "serve", "--workers", "2"],
        env={"HYBRIDCACHE_PORT": "0", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert b"HYBRIDCACHE_WORKERS > 1 needs a fixed HYBRIDCACHE_PORT" in result.stderr


@pytest.mark.scaleout
@pytest.mark.timeout(300)
def test_measure_workers_throughput() -> None:
    """Cache hits (GetCreditCost) through 2 client processes x 8 threads: 1 worker vs 2.

    Asserts what holds on any host: every worker answers, no call fails, both runs make
    progress, and a second worker costs no more than noise (>= 0.7x one worker). Whether it
    gains depends on what the clients leave of the 2 cores: docs/SCALE-OUT.md measured about
    +25-33 %; a run on the host shared with six other engineers' tests gave 3,116 vs 3,101
    calls/s, so no gain is asserted."""
    request = serialized([pb.GetCreditCostRequest(tenant_id="acme", operation_code="crm.leads.create")])
    summaries: dict[int, Summary] = {}
    figures: dict[int, str] = {}
    with (
        tempfile.TemporaryDirectory(prefix="hc-workers-") as tmp,
        RedisProcess() as redis_,
        launch(redis_.url, token=WRAPPER_TOKEN, db_path=str(Path(tmp) / "w.db")) as wrapper,
    ):
        for workers in (1, 2):
            port = free_port()
            server = ServeProcess(
                replica_env(wrapper.url, redis_.url, port, HYBRIDCACHE_WORKERS=str(workers)),
                Path(tmp) / f"w{workers}.log",
            )
            server.start(timeout=60)
            try:
                # Every worker SERVING before measuring: fresh connections reach each (bounded).
                seen: set[str] = set()
                for _ in range(40):
                    seen.add(instance_of(server.target))
                    if len(seen) == workers:
                        break
                assert len(seen) == workers, f"{len(seen)} of {workers} workers answered over 40 connections"
                # A fresh pool per server: its channels connect (and spread) anew.
                with LoadPool(processes=2) as pool:
                    call = Call(server.target, "/hybridcache.v1.HybridCache/GetCreditCost", request)
                    result = pool.run(call, in_flight=16, warmup_s=1.0, duration_s=5.0)
            finally:
                server.stop(timeout=20)
            s = summaries[workers] = result.summary
            figures[workers] = (
                f"{s.throughput_per_s:,.0f} calls/s, p50 {s.p50_us / 1000:.2f} ms, "
                f"p99 {s.p99_us / 1000:.2f} ms, errors {s.errors}, client CPU {result.client_cpu}"
            )
    print("\nworkers (cache hits, 2 client processes x 8 threads, loopback):")
    for workers, line in figures.items():
        print(f"  HYBRIDCACHE_WORKERS={workers}: {line}")
    for workers, summary in summaries.items():
        assert summary.errors == 0, f"{workers} worker(s): {summary.errors} calls failed ({figures[workers]})"
        assert summary.samples > 0, f"{workers} worker(s): no call completed"
        assert summary.throughput_per_s > 0, f"{workers} worker(s): no throughput"
    ratio = summaries[2].throughput_per_s / summaries[1].throughput_per_s
    assert ratio >= 0.7, (
        f"2 workers did {ratio:.2f}x the calls of 1: a second worker should not cost throughput"
    )
