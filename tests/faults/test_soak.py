"""Scenario 7, the soak (`make soak`): 10 minutes of steady mixed load against a `hybridcache
serve` process, a change in the Wrapper every 10 ms, and a Redis restart every 2 minutes.

Invariants: zero failed reads outside the injected faults (a Redis restart should cost no
read at all, so reads inside the restart windows are counted and reported too); the server's
RSS grows less than 5% from the end of the warm-up to the end; after the last change every
answer equals the Wrapper's truth.

Writes docs/reliability/soak-rss.csv, soak-rss.svg (RSS over time, restarts marked, labelled)
and soak-rss.png (the same chart rasterised here, unlabelled).
HC_SOAK_S / HC_SOAK_REDIS_EVERY_S shorten it for a dry run; HC_SOAK_OUT moves the output.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from pathlib import Path

import grpc
import pytest

from hybridcache.client import WatchConfig, WatchStream
from hybridcache.v1 import hybridcache_pb2 as pb
from hybridcache.v1 import hybridcache_pb2_grpc as pb_grpc
from hybridcache_dev.harness.percentiles import percentile
from hybridcache_dev.harness.serve_process import ServeProcess
from hybridcache_dev.wrapper.seed import FLAG_KEYS, OPERATION_CODES
from tests.faults.conftest import REPO, Figures
from tests.faults.history import History, LoadLoop, Request, codes
from tests.faults.report import line_chart_png, line_chart_svg, write_csv
from tests.faults.scenarios import USERS, critical_requests, wait_converged
from tests.faults.stack import TENANTS, WrapperAdmin, spare_port, stack
from tests.helpers import wait_for

DURATION_S = float(os.environ.get("HC_SOAK_S", "600"))
REDIS_EVERY_S = float(os.environ.get("HC_SOAK_REDIS_EVERY_S", "120"))
CHANGE_EVERY_S = 0.010
LOAD_RATE = 200.0
RSS_EVERY_S = 2.0
WARMUP_S = min(180.0, DURATION_S * 0.3)
CONVERGE_S = 60.0
FAULT_SLACK_S = 2.0  # a restart window: from its stop to this long after Redis answers again
OUT = Path(os.environ.get("HC_SOAK_OUT", str(REPO / "docs" / "reliability")))


class Writer:
    """One change every CHANGE_EVERY_S in all, from `threads` threads (each paced against its own
    schedule, no bursts to catch up): one HTTP write takes a few ms, so one thread falls behind."""

    def __init__(self, admin_url: str, until: float, threads: int = 2) -> None:
        self.admin_url = admin_url
        self.until = until
        self.threads = threads
        self.done = 0
        self.unpublished = 0
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._workers = [
            threading.Thread(target=self._run, args=(n,), name=f"soak-writer-{n}", daemon=True)
            for n in range(threads)
        ]

    @staticmethod
    def change(admin: WrapperAdmin, i: int) -> dict[str, object]:
        tenant = TENANTS[i % 2]
        slot = i % 10
        if slot < 6:
            return admin.put_cost(
                tenant, OPERATION_CODES[(i // 2) % len(OPERATION_CODES)], f"{i % 997}.{i % 7}"
            )
        if slot < 8:
            return admin.patch_profile(tenant, USERS[(i // 10) % len(USERS)], title=f"title-{i}")
        if slot == 8:
            return admin.put_flag(tenant, FLAG_KEYS[(i // 10) % len(FLAG_KEYS)], bool(i % 3), f"v{i}")
        return admin.put_user_status(tenant, USERS[(i // 10) % len(USERS)], bool(i % 5), ["sales-rep"])

    def _run(self, n: int) -> None:
        admin = WrapperAdmin(self.admin_url)
        interval = CHANGE_EVERY_S * self.threads
        next_at = time.monotonic() + CHANGE_EVERY_S * n
        i = n
        try:
            while not self._stop.is_set() and time.monotonic() < self.until:
                pause = next_at - time.monotonic()
                if pause > 0 and self._stop.wait(pause):
                    break
                next_at = max(next_at + interval, time.monotonic())
                try:
                    published = bool(self.change(admin, i).get("published", False))
                except Exception as exc:  # the Wrapper is not under test; count and go on
                    # A failed write made no change and published nothing: counted apart,
                    # never as a change made (nor as one published).
                    with self._lock:
                        self.errors.append(repr(exc)[:200])
                else:
                    with self._lock:
                        self.done += 1
                        self.unpublished += not published
                i += self.threads
        finally:
            admin.close()

    def start(self) -> Writer:
        for worker in self._workers:
            worker.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(10)


@pytest.mark.soak
@pytest.mark.timeout(int(DURATION_S) + 600)
def test_soak(figures: Figures) -> None:
    critical = critical_requests()
    reference = [Request("profile", t, u) for t in TENANTS for u in USERS] + [
        Request("org-unit", t, unit) for t in TENANTS for unit in ("org-sales", "org-hr", "org-finance")
    ]
    history = History()
    rss: list[tuple[float, int]] = []
    restarts: list[tuple[float, float]] = []  # (stopped, answering again), relative to the start
    with stack() as s:
        server = ServeProcess(s.server_env(spare_port()), s.workdir / "soak-server.log").start()
        events = [0]
        resyncs = [0]
        channel = grpc.insecure_channel(server.target)
        stub = pb_grpc.HybridCacheStub(channel)
        watchers = [
            WatchStream(
                stub.WatchChanges,
                pb.WatchChangesRequest(tenant_ids=[tenant]),
                config=WatchConfig(idle_timeout=15.0, initial_backoff=0.1, max_backoff=2.0),
                on_resync=lambda _reason: resyncs.__setitem__(0, resyncs[0] + 1),
            )
            for tenant in TENANTS * 5
        ]

        def drain(stream: WatchStream) -> None:
            for _event in stream:
                events[0] += 1

        watch_threads = [threading.Thread(target=drain, args=(w,), daemon=True) for w in watchers]
        for thread in watch_threads:
            thread.start()
        t0 = time.monotonic()
        end = t0 + DURATION_S
        writer = Writer(s.wrapper.url, end).start()
        mix = critical * 2 + reference  # about two critical reads per reference read
        # The load outlives the soak by the final convergence wait (it is stopped right after).
        with LoadLoop(
            server.target, mix, history, workers=4, rate_per_s=LOAD_RATE, max_s=DURATION_S + CONVERGE_S + 30
        ) as load:
            next_rss = t0
            next_restart = t0 + REDIS_EVERY_S
            while time.monotonic() < end:
                now = time.monotonic()
                if now >= next_rss:
                    rss.append((now - t0, server.rss_bytes()))
                    next_rss += RSS_EVERY_S
                if now >= next_restart and now + 10 < end:
                    stopped = time.monotonic()
                    s.redis.restart()  # SIGTERM, then start again on the same port
                    restarts.append((stopped - t0, time.monotonic() - t0))
                    next_restart += REDIS_EVERY_S
                assert server.running(), "the server process died during the soak"
                time.sleep(0.05)  # the soak's own clock tick (pacing, not readiness)
            writer.stop()
            truth = s.admin.truths(critical)
            t_last = time.monotonic()
            try:
                converged_s: float | None = wait_converged(
                    history, truth, since=t_last, timeout=CONVERGE_S
                ).t_s
                not_converged = ""
            except AssertionError as exc:  # reported after the figures are written
                converged_s, not_converged = None, str(exc)
            load.stop()
        for watcher in watchers:
            watcher.close()
        channel.close()
        server.stop()

    in_fault = [(a - 0.0, b + FAULT_SLACK_S) for a, b in restarts]

    def faulted(o_start: float) -> bool:
        rel = o_start - t0
        return any(a <= rel <= b for a, b in in_fault)

    outside = [o for o in history if not o.ok and not faulted(o.start)]
    inside = [o for o in history if not o.ok and faulted(o.start)]
    warm = [b for t, b in rss if WARMUP_S - 30 <= t <= WARMUP_S] or [rss[len(rss) // 3][1]]
    final = [b for t, b in rss if t >= DURATION_S - 30] or [rss[-1][1]]
    baseline, last = sum(warm) / len(warm), sum(final) / len(final)
    growth = last / baseline - 1
    mib = [(t, b / 2**20) for t, b in rss]
    write_csv(OUT / "soak-rss.csv", ["elapsed_s", "rss_mib"], mib)
    (OUT / "soak-rss.svg").write_text(
        line_chart_svg(
            mib,
            title=(
                f"hybridcache serve RSS during a {DURATION_S / 60:.0f}-minute soak "
                f"(growth after warm-up {growth:+.1%})"
            ),
            x_label="elapsed seconds",
            y_label="RSS (MiB)",
            markers=[a for a, _ in restarts],
            marker_label="Redis restart",
            band=(0.0, WARMUP_S),
            band_label="warm-up",
        )
    )
    (OUT / "soak-rss.png").write_bytes(
        line_chart_png(mib, markers=[a for a, _ in restarts], band=(0.0, WARMUP_S))
    )
    latencies = [o.latency_s for o in history if o.ok]
    figures.record(
        "7-soak",
        "soak",
        duration_s=DURATION_S,
        redis_restarts=len(restarts),
        restart_windows_s=[(round(a, 1), round(b, 1)) for a, b in restarts],
        reads=len(history),
        reads_failed_outside_faults=len(outside),
        reads_failed_inside_restart_windows=len(inside),
        failed_codes=codes(outside + inside),
        failed_by_op=dict(Counter(o.request.op for o in outside + inside)),
        failed_latency_ms=sorted(round(o.latency_s * 1000) for o in outside + inside)[:40],
        read_latency_ms_p50=round(percentile(latencies, 50) * 1000, 2),
        read_latency_ms_p99=round(percentile(latencies, 99) * 1000, 2),
        changes_made=writer.done,
        changes_per_s=round(writer.done / DURATION_S, 1),
        changes_unpublished=writer.unpublished,
        wrapper_write_errors=len(writer.errors),
        watch_events=events[0],
        watch_resyncs=resyncs[0],
        final_convergence_s=None if converged_s is None else round(converged_s, 3),
        rss_mib_start=round(rss[0][1] / 2**20, 1),
        rss_mib_after_warmup=round(baseline / 2**20, 1),
        rss_mib_end=round(last / 2**20, 1),
        rss_growth_after_warmup=round(growth, 4),
        warmup_s=WARMUP_S,
    )
    assert not not_converged, not_converged
    assert not outside, f"{len(outside)} reads failed outside the injected faults: {codes(outside)}"
    assert growth < 0.05, (
        f"RSS grew {growth:.1%} after warm-up ({baseline / 2**20:.1f} -> {last / 2**20:.1f} MiB): "
        f"see {OUT / 'soak-rss.svg'}"
    )


@pytest.mark.timeout(30)
def test_soak_writer_counts_failed_writes_apart_from_changes_made() -> None:
    """The soak's figures: a write the Wrapper never took (here: nothing listens on its port)
    is an error, not a change made, and certainly not a published one."""
    nowhere = f"http://127.0.0.1:{spare_port()}"
    writer = Writer(nowhere, until=time.monotonic() + 20).start()
    try:
        wait_for(lambda: len(writer.errors) >= 5, timeout=15, what="five refused writes")
    finally:
        writer.stop()
    assert (writer.done, writer.unpublished) == (0, 0), (
        f"{writer.done} failed writes counted as changes made ({writer.unpublished} as unpublished)"
    )
