"""The verifier on its own: the real cache core, an in-memory Wrapper that serves digests."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import pytest

from hybridcache.client.reasons import Reason
from hybridcache.server.core import HybridCache, Kind, NotFound, WrapperUnavailable
from hybridcache.server.core.digest import KindDigest, bucket_of, digest_of
from hybridcache.server.core.values import Value
from hybridcache.server.events.ports import ChangeNotice
from hybridcache.server.events.verifier import EVENT_TYPE, Verifier, VerifierConfig
from tests.unit.core.fakes import FakeWrapper, cost

pytestmark = pytest.mark.timeout(30)

KINDS = (Kind.CREDIT_COSTS, Kind.ROLE_PERMISSIONS, Kind.USER_STATUS, Kind.FEATURE_FLAGS)


@dataclass
class DigestWrapper:
    """Digests of the fake Wrapper's data; `fail` / `missing` make it answer as a broken or an
    older Wrapper would."""

    data: FakeWrapper
    fail: bool = False
    missing: bool = False
    calls: list[str] = field(default_factory=list)

    def _items(self, tenant_id: str, kind: Kind) -> dict[str, Value]:
        if self.fail:
            raise WrapperUnavailable("down", reason=Reason.WRAPPER_UNREACHABLE)
        if self.missing:
            raise NotFound("not found", reason=Reason.NOT_FOUND)
        if tenant_id not in self.data.data:
            raise NotFound("unknown tenant", reason=Reason.TENANT_NOT_FOUND)
        return self.data.data[tenant_id].get(kind, {})

    def fetch_digest(
        self, tenant_id: str, kind: Kind, bucket_count: int, deadline: float | None, *, buckets: bool = False
    ) -> KindDigest:
        self.calls.append("buckets" if buckets else "digest")
        digest = digest_of(self._items(tenant_id, kind).items(), bucket_count)
        return digest if buckets else KindDigest(digest.bucket_count, digest.count, digest.top, ())

    def fetch_bucket(
        self, tenant_id: str, kind: Kind, bucket_count: int, bucket: int, deadline: float | None
    ) -> dict[str, Value]:
        self.calls.append("bucket")
        items = self._items(tenant_id, kind)
        return {k: v for k, v in items.items() if bucket_of(k, bucket_count) == bucket}


@pytest.fixture
def wrapper() -> FakeWrapper:
    w = FakeWrapper()
    for i in range(50):
        w.put("acme", Kind.CREDIT_COSTS, f"op.{i}", cost(f"op.{i}", "1", 1))
    for kind in KINDS[1:]:
        w.data["acme"].setdefault(kind, {})
    return w


@pytest.fixture
def cache(wrapper: FakeWrapper) -> HybridCache:
    return HybridCache(wrapper)


def _verifier(cache: HybridCache, source: DigestWrapper, notices: list[ChangeNotice]) -> Verifier:
    return Verifier(cache, source, notices.append, VerifierConfig(kinds=KINDS, bucket_count=16))


def test_a_quiet_pass_costs_one_digest_request_per_tenant_kind(
    cache: HybridCache, wrapper: FakeWrapper
) -> None:
    cache.ensure_tenant("acme")
    source, notices = DigestWrapper(wrapper), list[ChangeNotice]()
    stats = _verifier(cache, source, notices).run_once()
    assert source.calls == ["digest"] * 4
    assert (stats.compared, stats.mismatched, stats.keys_repaired, notices) == (4, 0, 0, [])


def test_a_difference_rereads_only_its_bucket_and_is_published(
    cache: HybridCache, wrapper: FakeWrapper
) -> None:
    cache.ensure_tenant("acme")
    wrapper.put("acme", Kind.CREDIT_COSTS, "op.7", cost("op.7", "5", 2))  # no event
    source, notices = DigestWrapper(wrapper), list[ChangeNotice]()
    stats = _verifier(cache, source, notices).run_once()
    assert source.calls.count("bucket") == 1
    assert [(n.keys, n.event_type, n.version) for n in notices] == [(("op.7",), EVENT_TYPE, 2)]
    assert cache.get("acme", Kind.CREDIT_COSTS, "op.7").value == cost("op.7", "5", 2)
    assert (stats.mismatched, stats.buckets_repaired, stats.keys_repaired) == (1, 1, 1)


def test_a_wrapper_failure_cuts_the_pass_short_and_is_counted(
    cache: HybridCache, wrapper: FakeWrapper, caplog: pytest.LogCaptureFixture
) -> None:
    cache.ensure_tenant("acme")
    source = DigestWrapper(wrapper, fail=True)
    stats = _verifier(cache, source, []).run_once()
    assert source.calls == ["digest"], "no more Wrapper calls in a pass once one failed"
    assert stats.failures == 1
    assert any("WRAPPER_UNREACHABLE" in r.getMessage() for r in caplog.records)


def test_a_wrapper_without_digests_is_said_once(
    cache: HybridCache, wrapper: FakeWrapper, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="hybridcache.server.events.verifier")
    cache.ensure_tenant("acme")
    source = DigestWrapper(wrapper, missing=True)
    verifier = _verifier(cache, source, [])
    for _ in range(3):
        verifier.run_once()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1, lines
    assert "no digest endpoint" in lines[0]
    assert verifier.supported is False
    source.missing = False  # the Wrapper was upgraded: picked up, and said once
    verifier.run_once()
    assert verifier.supported is True
    assert len(caplog.records) == 2
