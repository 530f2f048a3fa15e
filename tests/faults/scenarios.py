"""What the scenarios share: the request mix, the changes made in the Wrapper, convergence waits."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from hybridcache_dev.wrapper.seed import FLAG_KEYS, OPERATION_CODES
from tests.faults.history import Convergence, History, Request, convergence, wait_until
from tests.faults.stack import TENANTS, WrapperAdmin

USERS = tuple(f"user-{i}" for i in range(1, 21))
PERMISSIONS = ("crm.leads.create", "crm.contacts.export", "hrms.payroll.run", "finance.invoice.send")


def critical_requests() -> list[Request]:
    """Every credit cost, flag and (20) user statuses of both tenants, and permission checks."""
    requests: list[Request] = []
    for tenant in TENANTS:
        requests += [Request("credit-cost", tenant, code) for code in OPERATION_CODES]
        requests += [Request("flag", tenant, key) for key in FLAG_KEYS]
        requests += [Request("user-status", tenant, user) for user in USERS]
        requests += [Request("permission", tenant, f"{user}|{p}") for user in USERS[:4] for p in PERMISSIONS]
    return requests


def make_change(admin: WrapperAdmin, run: int, i: int) -> dict[str, Any]:
    """The i-th change of run `run`: 8 in 10 credit costs, then a flag, then a user status."""
    tenant = TENANTS[i % len(TENANTS)]
    slot = i % 10
    if slot < 8:
        code = OPERATION_CODES[(i // 2) % len(OPERATION_CODES)]
        return admin.put_cost(tenant, code, f"{run + 1}.{i:03d}")
    if slot == 8:
        key = FLAG_KEYS[(i // 10) % len(FLAG_KEYS)]
        return admin.put_flag(tenant, key, enabled=bool((run + i) % 2), value=f"r{run}-{i}")
    user = USERS[(i // 10) % len(USERS)]
    roles = ["sales-rep"] if (run + i) % 2 else ["viewer", "hr"]
    return admin.put_user_status(tenant, user, active=bool((run + i) % 3), roles=roles)


def make_changes(admin: WrapperAdmin, run: int, count: int, *, over_s: float) -> list[dict[str, Any]]:
    """`count` changes spread evenly over `over_s` seconds (paced against a deadline)."""
    results = []
    started = time.monotonic()
    for i in range(count):
        due = started + over_s * i / count
        pause = due - time.monotonic()
        if pause > 0:
            time.sleep(pause)  # pacing writes, not waiting for readiness
        results.append(make_change(admin, run, i))
    return results


def wait_converged(
    history: History,
    truth: dict[tuple[str, str, str], str],
    *,
    since: float,
    timeout: float,
    stable_s: float = 1.0,
) -> Convergence:
    """Wait until every entity's answers equal the truth, confirmed for `stable_s` seconds."""

    def check() -> Convergence | None:
        result = convergence(history.select(since=since), truth, since=since)
        if result.converged and time.monotonic() - (since + result.t_s) >= stable_s:
            return result
        return None

    try:
        found = wait_until(check, timeout=timeout, what="every answer to equal the Wrapper's truth")
    except AssertionError:
        result = convergence(history.select(since=since), truth, since=since)
        wrong = [
            (o.request.entity, o.value, truth.get(o.request.entity), o.source, o.freshness)
            for o in history.select(since=time.monotonic() - 1.0)
            if o.request.entity in truth and o.value != truth[o.request.entity]
        ][:5]
        raise AssertionError(
            f"answers did not converge on the Wrapper's truth within {timeout} s: "
            f"{len(result.unconfirmed)} entities unconfirmed, e.g. {result.unconfirmed[:3]}; "
            f"recent wrong answers (entity, got, want, source, freshness): {wrong}"
        ) from None
    assert found is not None  # wait_until returns a truthy value or fails
    return found


def summary(values: Sequence[float]) -> dict[str, float]:
    from hybridcache_dev.harness.percentiles import percentile

    return {
        "min": round(min(values), 3),
        "p50": round(percentile(values, 50), 3),
        "p99": round(percentile(values, 99), 3),
        "max": round(max(values), 3),
    }
