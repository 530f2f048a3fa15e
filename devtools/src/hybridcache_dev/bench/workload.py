"""The strategy table's reproducible workload: Zipf-distributed reads over 5 tenants x 10k
users x 1k operation codes (fixed seed), as raw requests for the load generator."""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

from hybridcache.v1 import hybridcache_pb2 as pb
from hybridcache_dev.bench.stack import TENANTS, USERS, operation_codes

SEED = 20261125
ZIPF_S = 1.0
MIX = (("GetCreditCost", 0.4), ("CheckPermission", 0.4), ("GetUserProfile", 0.2))
METHODS = tuple(f"/hybridcache.v1.HybridCache/{name}" for name, _ in MIX)


@dataclass(frozen=True)
class Workload:
    requests: tuple[bytes, ...]
    method_of: bytes
    distinct_keys: dict[str, int]


def _zipf_picker(rng: random.Random, universe: list[str], count: int) -> list[str]:
    """`count` draws from `universe` with P(rank r) ∝ 1 / r^s; ranks shuffled over the keys so
    hot keys are spread across tenants."""
    keys = list(universe)
    rng.shuffle(keys)
    cumulative = list(itertools.accumulate(1.0 / (rank**ZIPF_S) for rank in range(1, len(keys) + 1)))
    return rng.choices(keys, cum_weights=cumulative, k=count)


def build(count: int) -> Workload:
    rng = random.Random(SEED)
    codes = operation_codes()
    cost_keys = [f"{t}|{c}" for t in TENANTS for c in codes]
    user_keys = [f"{t}|user-{u}" for t in TENANTS for u in range(1, USERS + 1)]
    shares = [int(count * share) for _, share in MIX]
    picks = {
        "GetCreditCost": _zipf_picker(rng, cost_keys, shares[0]),
        "CheckPermission": _zipf_picker(rng, user_keys, shares[1]),
        "GetUserProfile": _zipf_picker(rng, user_keys, shares[2]),
    }
    rows: list[tuple[int, bytes]] = []
    for index, (name, _) in enumerate(MIX):
        for key in picks[name]:
            tenant, ident = key.split("|", 1)
            if name == "GetCreditCost":
                message: object = pb.GetCreditCostRequest(tenant_id=tenant, operation_code=ident)
            elif name == "CheckPermission":
                message = pb.CheckPermissionRequest(
                    tenant_id=tenant, user_id=ident, permission=rng.choice(codes)
                )
            else:
                message = pb.GetUserProfileRequest(tenant_id=tenant, user_id=ident)
            rows.append((index, message.SerializeToString()))  # type: ignore[attr-defined]
    rng.shuffle(rows)
    return Workload(
        requests=tuple(r for _, r in rows),
        method_of=bytes(i for i, _ in rows),
        distinct_keys={name: len(set(keys)) for name, keys in picks.items()},
    )
