"""Replica digests (core/digest.py) and the authority's repair of one bucket (core/authority.py)."""

from __future__ import annotations

import hashlib

import pytest

from hybridcache.server.core import HybridCache, Kind
from hybridcache.server.core.digest import DigestMemo, bucket_of, digest_of, entity_bytes
from hybridcache.server.core.values import CreditCost, FeatureFlag, RolePermissions, UserStatus
from tests.unit.core.fakes import FakeWrapper, cost

pytestmark = pytest.mark.timeout(30)


def _spec_field(text: str) -> bytes:
    raw = text.encode()
    return len(raw).to_bytes(4, "big") + raw


def test_entity_bytes_follow_the_documented_canonical_form() -> None:
    # Written out from docs/CONTRACTS-INTERNAL.md ("Digests"), not from the implementation.
    f = _spec_field
    assert entity_bytes("crm.leads.create", CreditCost("crm.leads.create", "2.5", 3)) == (
        f("crm.leads.create") + f("3") + f("2.5")
    )
    assert entity_bytes("r", RolePermissions("r", frozenset({"b.*", "a"}), 1)) == (
        f("r") + f("1") + f("2") + f("a") + f("b.*")
    )
    assert entity_bytes("u", UserStatus("u", False, ("viewer", "admin"), 7)) == (
        f("u") + f("7") + f("0") + f("2") + f("viewer") + f("admin")
    )
    assert entity_bytes("k", FeatureFlag("k", True, "", 2)) == f("k") + f("2") + f("1") + f("")


def test_digest_matches_the_documented_hash_and_buckets() -> None:
    items = [(f"op.{i}", CreditCost(f"op.{i}", f"{i}.5", i + 1)) for i in range(10)]
    buckets = [bytes(16)] * 4
    for key, value in items:
        b = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % 4
        h = hashlib.sha256(entity_bytes(key, value)).digest()[:16]
        buckets[b] = bytes(x ^ y for x, y in zip(buckets[b], h, strict=True))
    top = hashlib.sha256((4).to_bytes(4, "big") + b"".join(buckets)).digest()[:16]
    digest = digest_of(items, 4)
    assert digest.buckets == tuple(b.hex() for b in buckets)
    assert digest.top == top.hex()
    assert digest.count == 10


def test_digest_is_order_free_and_sees_value_and_version_changes() -> None:
    items = [(f"op.{i}", cost(f"op.{i}", "1", 1)) for i in range(50)]
    base = digest_of(items, 16)
    assert digest_of(reversed(items), 16) == base
    value_changed = [*items[:-1], ("op.49", cost("op.49", "2", 1))]
    version_changed = [*items[:-1], ("op.49", cost("op.49", "1", 2))]
    for changed in (value_changed, version_changed):
        other = digest_of(changed, 16)
        assert other.top != base.top
        assert base.differing(other) == [bucket_of("op.49", 16)], "only the changed key's bucket differs"


def test_memo_equals_a_fresh_computation_after_writes() -> None:
    memo = DigestMemo(64)
    items = {f"op.{i}": cost(f"op.{i}", "1", 1) for i in range(200)}
    assert memo.compute(items.items()) == digest_of(items.items(), 64)
    items["op.3"] = cost("op.3", "9", 2)
    del items["op.4"]
    items["op.new"] = cost("op.new")
    assert memo.compute(items.items()) == digest_of(items.items(), 64)
    assert "op.new" in memo.keys_in(bucket_of("op.new", 64))
    assert "op.4" not in memo.keys_in(bucket_of("op.4", 64))


def test_bad_bucket_counts_are_refused() -> None:
    for bad in (0, 3, 8192):
        with pytest.raises(ValueError, match="power of two"):
            DigestMemo(bad)


# --- the authority's repair of one bucket


@pytest.fixture
def wrapper() -> FakeWrapper:
    w = FakeWrapper()
    for i in range(20):
        w.put("acme", Kind.CREDIT_COSTS, f"op.{i}", cost(f"op.{i}", "1", 1))
    for kind in (Kind.ROLE_PERMISSIONS, Kind.USER_STATUS, Kind.FEATURE_FLAGS):
        w.data["acme"].setdefault(kind, {})
    return w


def _repair_all(cache: HybridCache, wrapper: FakeWrapper, count: int = 8) -> list[str]:
    """What the verifier does, with the fake Wrapper as the authority; the keys changed."""
    mark = cache.begin_verify("acme", Kind.CREDIT_COSTS)
    memo = DigestMemo(count)
    items = cache.settled_items("acme", Kind.CREDIT_COSTS)
    assert items is not None
    ours = memo.compute(items)
    truth = wrapper.data["acme"][Kind.CREDIT_COSTS]
    theirs = digest_of(truth.items(), count)
    changed: list[str] = []
    for bucket in ours.differing(theirs):
        changed += [c.key for c in cache.install_authority(mark, bucket, count, truth, memo.keys_in(bucket))]
    cache.end_verify(mark)
    return changed


def test_authority_replaces_a_forged_version_and_restores_lost_changes(
    cache: HybridCache, wrapper: FakeWrapper
) -> None:
    cache.ensure_tenant("acme")
    # A forged event with an absurd version; a lost event (the Wrapper changed, nobody heard);
    # a lost deletion; a lost creation.
    cache.apply("acme", Kind.CREDIT_COSTS, "op.1", cost("op.1", "99", 2**62))
    wrapper.put("acme", Kind.CREDIT_COSTS, "op.2", cost("op.2", "5", 2))
    wrapper.delete("acme", Kind.CREDIT_COSTS, "op.3")
    wrapper.put("acme", Kind.CREDIT_COSTS, "op.new", cost("op.new", "7", 1))
    wrapper.put("acme", Kind.CREDIT_COSTS, "op.1", cost("op.1", "2", 2))

    changed = _repair_all(cache, wrapper)

    assert sorted(changed) == ["op.1", "op.2", "op.3", "op.new"]
    assert cache.get("acme", Kind.CREDIT_COSTS, "op.1").value == cost("op.1", "2", 2), "authority wins"
    assert cache.get("acme", Kind.CREDIT_COSTS, "op.2").value == cost("op.2", "5", 2)
    assert cache.get("acme", Kind.CREDIT_COSTS, "op.new").value == cost("op.new", "7", 1)
    with pytest.raises(Exception, match="no credit-costs"):
        cache.get("acme", Kind.CREDIT_COSTS, "op.3")
    # The repaired version is the Wrapper's: its next real change (version 3) applies.
    outcome, _ = cache.apply("acme", Kind.CREDIT_COSTS, "op.1", cost("op.1", "3", 3))
    assert outcome == "applied"
    assert _repair_all(cache, wrapper) == ["op.1"]  # the Wrapper never made that change: undone


def test_a_write_during_the_verification_is_not_overwritten(cache: HybridCache, wrapper: FakeWrapper) -> None:
    cache.ensure_tenant("acme")
    mark = cache.begin_verify("acme", Kind.CREDIT_COSTS)
    stale_truth = dict(wrapper.data["acme"][Kind.CREDIT_COSTS])  # read before the event below
    cache.apply("acme", Kind.CREDIT_COSTS, "op.5", cost("op.5", "8", 2))  # newer than that read
    changes = [
        c
        for b in range(4)
        for c in cache.install_authority(mark, b, 4, stale_truth, [f"op.{i}" for i in range(20)])
    ]
    cache.end_verify(mark)
    assert changes == []
    assert mark.skipped == 1, "the rewritten key differed from the read: the verifier looks again soon"
    assert cache.get("acme", Kind.CREDIT_COSTS, "op.5").value == cost("op.5", "8", 2)


def test_a_snapshot_during_the_verification_voids_it(cache: HybridCache, wrapper: FakeWrapper) -> None:
    cache.ensure_tenant("acme")
    mark = cache.begin_verify("acme", Kind.CREDIT_COSTS)
    old_truth = {k: cost(k, "0", 1) for k in wrapper.data["acme"][Kind.CREDIT_COSTS]}
    cache.resync_tenant("acme")
    changes = [c for b in range(4) for c in cache.install_authority(mark, b, 4, old_truth, [])]
    cache.end_verify(mark)
    assert changes == []
    assert cache.get("acme", Kind.CREDIT_COSTS, "op.0").value == cost("op.0", "1", 1)
