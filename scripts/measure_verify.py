"""Measure what one anti-entropy pass costs (docs/RELIABILITY.md, scenario 8).

    .venv/bin/python scripts/measure_verify.py [--entries 10000 100000]

For each size: a private Redis, the development Wrapper seeded with one tenant of
entries/2 users and entries/2 operation codes (so ~entries replicated items: user status
and credit costs, plus a few roles and flags), the real server in this process with its own
verifier thread off, and the Wrapper reached through the fault proxy (which counts bytes).
Then passes are run by hand: the first (the digest memo is cold), a quiet one (nothing
differs), one after 1 unpublished change, one after 100. Figures: Wrapper requests, bytes
sent and received, the pass's CPU time on its thread (server CPU), wall time, and the
core's digest computation alone (cold and warm memo).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the fault proxy lives with the tests

from hybridcache.server.app import create_service  # noqa: E402
from hybridcache.server.core.digest import DigestMemo  # noqa: E402
from hybridcache.server.core.kinds import Kind  # noqa: E402
from hybridcache.server.ops.readiness import wait_serving  # noqa: E402
from hybridcache_dev.stack.redis_process import RedisProcess  # noqa: E402
from hybridcache_dev.wrapper import launch  # noqa: E402
from tests.conftest import WRAPPER_TOKEN, service_settings  # noqa: E402
from tests.faults.proxy import FaultProxy  # noqa: E402

TENANT = "tenant-0001"


def _pass(service: object, proxy: FaultProxy) -> dict[str, float]:
    verifier = service.verifier  # type: ignore[attr-defined]
    before = (verifier.stats.wrapper_requests, verifier.stats.keys_repaired)
    up, down = proxy.stats.forwarded_up, proxy.stats.forwarded_down
    cpu, wall = time.thread_time(), time.perf_counter()
    verifier.run_once()
    cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
    return {
        "requests": verifier.stats.wrapper_requests - before[0],
        "repaired": verifier.stats.keys_repaired - before[1],
        "bytes_sent": proxy.stats.forwarded_up - up,
        "bytes_received": proxy.stats.forwarded_down - down,
        "cpu_ms": round(cpu * 1e3, 1),
        "wall_ms": round(wall * 1e3, 1),
    }


def measure(entries: int) -> None:
    half = entries // 2
    with (
        tempfile.TemporaryDirectory(prefix="hc-measure-verify-") as tmp,
        RedisProcess() as redis_,
        launch(
            redis_.url,
            token=WRAPPER_TOKEN,
            db_path=str(Path(tmp) / "w.db"),
            scale=f"1x{half}x{half}",
            ready_timeout=300,
        ) as wrapper,
        FaultProxy(wrapper.port) as proxy,
    ):
        settings = service_settings(
            proxy.http_url, redis_.url, tenants=[TENANT], verify_interval_s=0, refresh_interval_s=0
        )
        service = create_service(settings)
        try:
            wait_serving(f"127.0.0.1:{service.port}", timeout=300)
            items = service.cache.settled_items(TENANT, Kind.CREDIT_COSTS) or []
            items += service.cache.settled_items(TENANT, Kind.USER_STATUS) or []
            memo = DigestMemo()
            t0 = time.perf_counter()
            memo.compute(items)
            cold = time.perf_counter() - t0
            t0 = time.perf_counter()
            memo.compute(items)
            warm = time.perf_counter() - t0
            print(f"\n{len(items):,} credit-cost + user-status entries in the replica")
            print(f"  core digest of them: cold memo {cold * 1e3:.0f} ms, warm memo {warm * 1e3:.0f} ms")
            rows = [("first pass (cold memo)", _pass(service, proxy)), ("quiet pass", _pass(service, proxy))]
            admin = httpx.Client(
                base_url=wrapper.url, headers={"Authorization": f"Bearer {WRAPPER_TOKEN}"}, timeout=30
            )
            for changed in (1, 100):
                for i in range(changed):
                    code = f"bench.op{21 + i:05d}.run"
                    admin.put(
                        f"/admin/tenants/{TENANT}/credit-costs/{code}",
                        params={"publish": "false"},
                        json={"cost": f"{7 + changed}.{i:03d}"},
                    ).raise_for_status()
                rows.append((f"{changed} unpublished change(s)", _pass(service, proxy)))
            admin.close()
            for label, row in rows:
                print(f"  {label:<26} {row}")
        finally:
            service.stop(0, drain_s=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, nargs="+", default=[10_000, 100_000])
    for entries in parser.parse_args().entries:
        measure(entries)


if __name__ == "__main__":
    main()
