"""Scenario 6: SIGTERM to a `hybridcache serve` process while 100 watch streams and 500 unary
RPC/s run; then the server is started again on the same port.

Invariants:
* unary RPCs in flight at SIGTERM complete (slow ones included: Wrapper fetches held 600 ms);
* every stream ends with UNAVAILABLE (not a silent close, not CANCELLED);
* every `hybridcache-client` watcher reconnects to the new server by itself, is told
  RESYNC_REQUIRED (its resume token names the old instance), and then receives a change
  made after the restart;
* no answer ever comes from an empty cache: every successful answer equals the Wrapper's
  truth, none is NOT_FOUND (health gates traffic until the replica is warm, and a read that
  arrives early waits for the load instead of answering from nothing).

Figures: time to SERVING after the restart, time until all watchers resynced and converged,
in-flight RPCs completed, answers from an empty cache (must be 0).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from hybridcache.client import WatchConfig, WatchStream
from hybridcache.v1 import hybridcache_pb2 as pb
from hybridcache.v1 import hybridcache_pb2_grpc as pb_grpc
from hybridcache_dev.harness.serve_process import ServeProcess
from tests.faults.conftest import Figures, Scale, variants
from tests.faults.history import History, LoadLoop, Request, codes, observe, wait_until
from tests.faults.scenarios import critical_requests
from tests.faults.stack import health_status, spare_port, stack

STREAMS = 100
RATE = 500.0
GRACE_S = 5.0
SLOW_MS = 600
PROFILE_ROUTE = "GET /api/tenants/{tenantId}/users/{userId}/profile"
CHANGED_USER = "user-30"  # not among the load's entities: its change is the convergence probe


class RecordingCall:
    """A WatchChanges call that remembers how it ended (status code, or a clean end)."""

    def __init__(self, call: Any, ends: list[tuple[float, str]]) -> None:
        self._call = call
        self._ends = ends

    def __iter__(self) -> Iterator[pb.WatchChangesResponse]:
        return self

    def __next__(self) -> pb.WatchChangesResponse:
        try:
            return next(self._call)  # type: ignore[no-any-return]
        except grpc.RpcError as exc:
            self._ends.append((time.monotonic(), exc.code().name))
            raise
        except StopIteration:
            self._ends.append((time.monotonic(), "ENDED_CLEANLY"))
            raise

    def cancel(self) -> None:
        self._call.cancel()


class Watcher:
    """A hybridcache-client WatchStream on its own thread, recording resyncs and changes."""

    def __init__(self, index: int, channel: grpc.Channel) -> None:
        self.index = index
        self.ends: list[tuple[float, str]] = []
        self.resyncs: list[tuple[float, str]] = []
        self.changes: list[tuple[float, str, int]] = []
        stub = pb_grpc.HybridCacheStub(channel)
        request = pb.WatchChangesRequest(tenant_ids=["acme"])
        self.stream = WatchStream(
            lambda req: RecordingCall(stub.WatchChanges(req), self.ends),
            request,
            config=WatchConfig(idle_timeout=10.0, initial_backoff=0.1, max_backoff=1.0),
            on_resync=lambda reason: self.resyncs.append((time.monotonic(), reason)),
        )
        self.thread = threading.Thread(target=self._run, name=f"watcher-{index}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        for event in self.stream:  # ends when closed
            for key in event.keys:
                self.changes.append((time.monotonic(), key, int(event.version)))

    def close(self) -> None:
        self.stream.close()
        self.thread.join(5)


@pytest.mark.faults
@pytest.mark.timeout(600)
@pytest.mark.parametrize("scale", variants(Scale("fast", runs=1), Scale("full", runs=5)))
def test_sigterm_drains_and_clients_resume(scale: Scale, figures: Figures) -> None:
    requests = critical_requests()
    runs: list[dict[str, Any]] = []
    problems: list[str] = []
    with stack() as s:
        port = spare_port()
        env = s.server_env(
            port,
            HYBRIDCACHE_MAX_STREAMS=str(STREAMS + 20),
            HYBRIDCACHE_MAX_STREAMS_PER_CALLER=str(STREAMS + 20),
            HYBRIDCACHE_WATCH_HEARTBEAT_S="1",
            HYBRIDCACHE_GRACE_S=str(GRACE_S),
        )
        server = ServeProcess(env, s.workdir / "server.log").start()
        truth = s.admin.truths(requests)
        channels = [grpc.insecure_channel(server.target) for _ in range(4)]
        watchers = [Watcher(i, channels[i % len(channels)]) for i in range(STREAMS)]
        try:
            for run in range(int(scale.runs)):
                runs.append(_one_restart(s, server, watchers, requests, truth, run, problems))
        finally:
            for watcher in watchers:
                watcher.close()
            for channel in channels:
                channel.close()
            server.stop()
    figures.record(
        "6-sigterm-restart",
        scale.name,
        streams=STREAMS,
        rpc_rate_per_s=RATE,
        grace_s=GRACE_S,
        restarts=len(runs),
        runs=runs,
        time_to_serving_s_max=max(r["time_to_serving_s"] for r in runs),
        time_to_all_resynced_s_max=max(r["time_to_all_resynced_s"] for r in runs),
        time_to_all_converged_s_max=max(r["time_to_all_converged_s"] for r in runs),
        answers_from_empty_cache=sum(r["answers_from_empty_cache"] for r in runs),
    )
    assert not problems, "restart invariants broken:\n" + "\n".join(problems)


def _one_restart(  # noqa: PLR0917 (one run's whole context, passed through once)
    s: Any,
    server: ServeProcess,
    watchers: list[Watcher],
    requests: list[Request],
    truth: dict[tuple[str, str, str], str],
    run: int,
    problems: list[str],
) -> dict[str, Any]:
    wait_until(
        lambda: all(w.stream.resume_token for w in watchers),
        timeout=20,
        what=f"all {len(watchers)} watchers to hold a resume token",
    )
    history = History()
    with LoadLoop(server.target, requests, history, workers=6, rate_per_s=RATE, max_s=120) as load:
        wait_until(lambda: len(history) > RATE, timeout=10, what="a second of load before SIGTERM")
        # Slow unary RPCs: reference fetches the Wrapper holds for SLOW_MS, in flight at SIGTERM.
        s.admin.set_faults(latencyMs=SLOW_MS, routes=[PROFILE_ROUTE])
        slow_results: list[Any] = []
        slow_threads = []
        with grpc.insecure_channel(server.target) as slow_channel:
            slow_stub = pb_grpc.HybridCacheStub(slow_channel)
            for i in range(8):
                # Not read before on this server instance (acme has 50 users): a real fetch.
                request = Request("profile", "acme", f"user-{21 + (run * 8 + i) % 30}")
                thread = threading.Thread(
                    target=lambda r=request: slow_results.append(observe(slow_stub, r, timeout=5.0)),
                    daemon=True,
                )
                thread.start()
                slow_threads.append(thread)
            time.sleep(0.15)  # let the slow calls reach the server: they are what is in flight
            t_term = time.monotonic()
            server.sigterm()
            for thread in slow_threads:
                thread.join(10)
        exit_code = server.wait(GRACE_S + 10)
        t_exit = time.monotonic()
        s.admin.clear_faults()
        t_restart = time.monotonic()
        server.start(wait=False)
        health: list[tuple[float, str]] = []

        def serving() -> bool:
            status = health_status(server.target, timeout=0.5)
            health.append((time.monotonic(), status))
            return status == "SERVING"

        wait_until(serving, timeout=30, what="SERVING after the restart", interval=0.01)
        t_serving = next(t for t, st in health if st == "SERVING")
        wait_until(
            lambda: all(any(t > t_restart for t, _ in w.resyncs) for w in watchers),
            timeout=30,
            what="every watcher to be told RESYNC_REQUIRED by the new server",
        )
        t_resynced = max(min(t for t, _ in w.resyncs if t > t_restart) for w in watchers)
        change = s.admin.put_user_status("acme", CHANGED_USER, active=bool(run % 2), roles=["viewer"])
        t_change = time.monotonic()
        version = int(change["version"])
        wait_until(
            lambda: all(any(k == CHANGED_USER and v >= version for _, k, v in w.changes) for w in watchers),
            timeout=30,
            what="every watcher to receive the change made after the restart",
        )
        t_converged = max(
            min(t for t, k, v in w.changes if k == CHANGED_USER and v >= version) for w in watchers
        )
        time.sleep(0.5)  # half a second of load on the warm new server (pacing, not readiness)
        load.stop()

    observations = list(history)
    in_flight = [o for o in observations if o.start < t_term - 0.01 and o.end > t_term]
    failed_in_flight = [o for o in in_flight if not o.ok]
    if failed_in_flight:
        detail = [
            f"{o.request.op} sent {o.start - t_term:+.3f} s, ended {o.end - t_term:+.3f} s: {o.code}"
            for o in failed_in_flight[:3]
        ]
        problems.append(
            f"run {run}: in-flight unary RPCs failed at SIGTERM: {codes(failed_in_flight)}; e.g. {detail} "
            f"(relative to SIGTERM; the server took {t_exit - t_term:.2f} s to exit, grace {GRACE_S} s)"
        )
    slow_failed = [o for o in slow_results if not o.ok]
    if len(slow_results) != 8 or slow_failed:
        problems.append(
            f"run {run}: slow in-flight RPCs did not all complete: {len(slow_results)} answered, "
            f"failures {codes(slow_failed)}"
        )
    endings = Counter(next((code for t, code in w.ends if t >= t_term), "NOT_ENDED") for w in watchers)
    if endings != Counter({"UNAVAILABLE": len(watchers)}):
        problems.append(f"run {run}: streams ended with {dict(endings)}, expected UNAVAILABLE for all")
    empty = [
        o
        for o in observations
        if (o.ok and o.request.entity in truth and o.value != truth[o.request.entity])
        or o.code == "NOT_FOUND"
    ]
    if empty:
        o = empty[0]
        problems.append(
            f"run {run}: {len(empty)} answers from an empty / cold cache, e.g. {o.request} -> {o.code} "
            f"{o.value!r} (truth {truth.get(o.request.entity)!r}) "
            f"at {o.start - t_restart:+.3f} s of the restart"
        )
    if exit_code != 0:
        problems.append(f"run {run}: the server exited with status {exit_code} on SIGTERM")
    down = [o for o in observations if t_term <= o.start and not o.ok]
    early = [o for o in observations if t_restart <= o.start < t_serving and o.ok]
    cancelled = [
        (round(o.start - t_term, 4), round(o.end - t_term, 4)) for o in observations if o.code == "CANCELLED"
    ]
    return {
        "exit_s": round(t_exit - t_term, 3),
        "time_to_serving_s": round(t_serving - t_restart, 3),
        "time_to_all_resynced_s": round(t_resynced - t_restart, 3),
        "time_to_all_converged_s": round(t_converged - t_restart, 3),
        "change_to_all_watchers_s": round(t_converged - t_change, 3),
        "unary_in_flight_at_sigterm": len(in_flight),
        "unary_in_flight_failed": len(failed_in_flight),
        "slow_in_flight_completed": sum(1 for o in slow_results if o.ok),
        "stream_endings": dict(endings),
        "resync_reasons": dict(Counter(r for w in watchers for t, r in w.resyncs if t > t_restart)),
        "unary_total": len(observations),
        "unary_failed_while_down": len(down),
        "unary_failed_codes": codes(down),
        "answered_before_serving": len(early),
        "cancelled_sent_ended_rel_sigterm_s": cancelled,
        "answers_from_empty_cache": len(empty),
    }
