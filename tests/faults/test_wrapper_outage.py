"""Scenario 3: the Wrapper answers 500, hangs, or resets connections for a while
(the development Wrapper's `/admin/faults`), under concurrent critical and reference reads.

Invariants (docs/GUARANTEES.md §4):
* critical reads are 100% served, from the replica;
* reference reads are served STALE (and say so) only within `ttl + max_stale_s` of their
  fetch, and otherwise fail UNAVAILABLE before the caller's deadline (never
  DEADLINE_EXCEEDED, never another code);
* the Wrapper calls per key during the outage stay within the retry policy:
  at most (1 + HYBRIDCACHE_WRAPPER_RETRIES) per reference read that reached the Wrapper.
"""

from __future__ import annotations

import json
import time
from typing import Any

import grpc
import pytest

from hybridcache.v1 import hybridcache_pb2_grpc as pb_grpc
from hybridcache_dev.harness.percentiles import percentile
from tests.faults.conftest import Figures, Scale, variants
from tests.faults.history import History, LoadLoop, Request, codes, observe, wait_until
from tests.faults.scenarios import USERS, critical_requests
from tests.faults.stack import TENANTS, stack

PROFILE_ROUTE = "GET /api/tenants/{tenantId}/users/{userId}/profile"
TTL_S = 1.0
DEADLINE_S = 0.5
RETRIES = 2
MODES: dict[str, dict[str, Any]] = {
    "500": {"failStatus": 500},
    "hang": {"hang": True},
    "reset": {"resetConnections": True},
}


def _profile_requests() -> list[Request]:
    return [Request("profile", tenant, user) for tenant in TENANTS for user in USERS]


@pytest.mark.faults
@pytest.mark.timeout(900)
@pytest.mark.parametrize("scale", variants(Scale("fast", outage_s=5.0), Scale("full", outage_s=30.0)))
def test_wrapper_down_degrades_gracefully(scale: Scale, figures: Figures) -> None:
    outage = scale.outage_s
    max_stale = outage / 2
    profiles = _profile_requests()
    results: dict[str, dict[str, object]] = {}
    problems: list[str] = []
    with stack() as s:
        # when_down stays the default (serve-stale); naming it explicitly is covered by
        # test_when_down_override_keeps_serving_stale below.
        policy = {"ttl_s": TTL_S, "max_stale_s": max_stale, "adaptive_ttl": False, "refresh_ahead": 0.0}
        s.spawn_server(  # a subprocess: the load generated here must not share the server's GIL
            HYBRIDCACHE_KIND_POLICIES=json.dumps({"user-profiles": policy}),
            HYBRIDCACHE_WRAPPER_RETRIES=str(RETRIES),
        )
        channel = grpc.insecure_channel(s.target)
        stub = pb_grpc.HybridCacheStub(channel)
        for mode, fault in MODES.items():
            s.admin.clear_faults()
            for request in profiles:  # warm: every profile fetched and fresh
                # After the previous mode the Wrapper's circuit breaker may still be open: it
                # closes on its next probe, within HYBRIDCACHE_WRAPPER_BREAKER_RESET_S (2 s).
                def answered(r: Request = request) -> bool:
                    return observe(stub, r, timeout=5.0).ok

                wait_until(answered, timeout=10, what=f"warming {request} after the fault cleared")
            s.admin.reset_stats()
            critical, reference = History(), History()
            t0 = time.monotonic()
            s.admin.set_faults(**fault)
            with (
                LoadLoop(
                    s.target, critical_requests(), critical, workers=2, rate_per_s=200, max_s=outage
                ) as crit,
                LoadLoop(
                    s.target,
                    profiles,
                    reference,
                    workers=4,
                    rate_per_s=100,
                    max_s=outage,
                    timeout_s=DEADLINE_S,
                    name="ref",
                ) as ref,
            ):

                def over(t0: float = t0) -> bool:
                    return time.monotonic() - t0 >= outage

                wait_until(
                    over,
                    timeout=outage + 5,
                    what="the outage period",
                    interval=0.1,
                )
                crit.stop()
                ref.stop()
            stats = s.admin.stats()
            s.admin.clear_faults()
            t_end = time.monotonic()

            crit_obs = critical.select()
            ref_obs = reference.select()
            crit_ok = sum(o.ok for o in crit_obs)
            if crit_ok != len(crit_obs):
                failed = codes(o for o in crit_obs if not o.ok)
                problems.append(f"{mode}: critical reads failed: {failed} of {len(crit_obs)}")
            limit_s = TTL_S + max_stale + 0.25
            too_stale = [o for o in ref_obs if o.ok and o.source == "stale" and o.age_ms / 1000 > limit_s]
            if too_stale:
                o = too_stale[0]
                problems.append(
                    f"{mode}: {len(too_stale)} reference answers served stale beyond max_stale_s "
                    f"(e.g. age {o.age_ms} ms > {limit_s * 1000:.0f} ms)"
                )
            from_wrapper = [o for o in ref_obs if o.ok and o.source == "wrapper"]
            if from_wrapper:
                problems.append(f"{mode}: {len(from_wrapper)} answers claim to come from a failing Wrapper")
            errors = [o for o in ref_obs if not o.ok]
            wrong_code = [o for o in errors if o.code != "UNAVAILABLE"]
            if wrong_code:
                problems.append(
                    f"{mode}: reference reads failed with other codes than UNAVAILABLE: "
                    f"{codes(wrong_code)} (deadline {DEADLINE_S} s)"
                )
            late = [o for o in errors if o.latency_s >= DEADLINE_S]
            if late:
                problems.append(f"{mode}: {len(late)} failures came at or after the caller's deadline")
            stale_window_end = t0 + TTL_S + max_stale + 0.5
            unavailable_after = [o for o in errors if o.start > stale_window_end and o.code == "UNAVAILABLE"]
            if not unavailable_after:
                problems.append(
                    f"{mode}: no UNAVAILABLE after the stale window ended: max_stale_s not enforced?"
                )
            calls = sum(stats["byTenant"].get(PROFILE_ROUTE, {}).values())
            reached = sum(1 for o in ref_obs if not (o.ok and o.source == "cache"))
            bound = (1 + RETRIES) * reached
            if calls > bound:
                problems.append(
                    f"{mode}: {calls} Wrapper profile calls for {reached} reads that reached it "
                    f"(bound {bound} = (1 + {RETRIES} retries) x reads)"
                )
            latencies = [o.latency_s for o in errors]
            results[mode] = {
                "critical_reads": len(crit_obs),
                "critical_success_rate": crit_ok / len(crit_obs) if crit_obs else None,
                "reference_reads": len(ref_obs),
                "reference_by_outcome": {
                    "cache": sum(1 for o in ref_obs if o.ok and o.source == "cache"),
                    "stale": sum(1 for o in ref_obs if o.ok and o.source == "stale"),
                    "unavailable": sum(1 for o in errors if o.code == "UNAVAILABLE"),
                    "other_error": len(wrong_code),
                },
                "stale_latency_ms_p99": round(
                    percentile([o.latency_s for o in ref_obs if o.source == "stale"], 99) * 1000, 1
                ),
                "stale_max_age_ms": max((o.age_ms for o in ref_obs if o.source == "stale"), default=0),
                "unavailable_latency_ms_p50": round(percentile(latencies, 50) * 1000, 1)
                if latencies
                else None,
                "unavailable_latency_ms_p99": round(percentile(latencies, 99) * 1000, 1)
                if latencies
                else None,
                "unavailable_latency_ms_max": round(max(latencies) * 1000, 1) if latencies else None,
                "deadline_ms": DEADLINE_S * 1000,
                "wrapper_profile_calls": calls,
                "wrapper_calls_per_key": round(calls / len(profiles), 2),
                "wrapper_calls_per_key_per_s": round(calls / len(profiles) / (t_end - t0), 3),
                "wrapper_calls_per_reaching_read": round(calls / reached, 3) if reached else None,
            }
        channel.close()
    figures.record(
        "3-wrapper-down",
        scale.name,
        outage_s=outage,
        ttl_s=TTL_S,
        max_stale_s=max_stale,
        retries=RETRIES,
        modes=results,
    )
    assert not problems, "graceful degradation broken:\n" + "\n".join(problems)


@pytest.mark.faults
@pytest.mark.timeout(120)
def test_when_down_override_keeps_serving_stale() -> None:
    """Found by scenario 3 (then an xfail): an explicit {"when_down": "serve-stale"} stayed a raw
    string and `policy.when_down is WhenWrapperDown.SERVE_STALE` was False, so stale serving
    was off. Fixed in b35ab68 (overrides typed at start); kept as a regression test."""
    with stack() as s:
        policy = {"ttl_s": 0.3, "max_stale_s": 30.0, "adaptive_ttl": False, "when_down": "serve-stale"}
        s.start_service(kind_policies={"user-profiles": policy})
        with grpc.insecure_channel(s.target) as channel:
            stub = pb_grpc.HybridCacheStub(channel)
            request = Request("profile", "acme", "user-1")
            assert observe(stub, request, timeout=5.0).ok
            s.admin.set_faults(failStatus=500)
            answer = wait_until(
                lambda: (o := observe(stub, request, timeout=2.0)).source != "cache" and o,
                timeout=5,
                what="the entry to expire",
            )
    assert answer.ok, f"the expired entry was not served stale: {answer.code} {answer.reason!r}"
    assert answer.source == "stale", (
        f"with when_down 'serve-stale' named explicitly, an expired entry within max_stale_s "
        f"was answered {answer.code} {answer.reason!r} instead of STALE"
    )
