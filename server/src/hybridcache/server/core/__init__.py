"""The cache core: pure, in-process, no I/O. `HybridCache` is the entry point.

    from hybridcache.server.core import HybridCache, DEFAULT_POLICIES
    cache = HybridCache(wrapper_client, DEFAULT_POLICIES, submit=executor.submit)
    read = cache.get("acme", Kind.CREDIT_COSTS, "crm.leads.create")

See docs/CORE.md for the semantics and the measured costs.
"""

from hybridcache.server.core.cache import HybridCache
from hybridcache.server.core.errors import CacheError, InvalidRequest, NotFound, WrapperUnavailable
from hybridcache.server.core.kinds import Kind, Tier, WhenWrapperDown
from hybridcache.server.core.permissions import PermissionDecision, PermissionReason
from hybridcache.server.core.policy import DEFAULT_POLICIES, SNAPSHOT_KINDS, KindPolicy
from hybridcache.server.core.results import MISSING, ApplyOutcome, Change, Read, Source
from hybridcache.server.core.source import Snapshot, WrapperSource
from hybridcache.server.core.stats import CacheStats, KindStats

__all__ = [
    "DEFAULT_POLICIES",
    "MISSING",
    "SNAPSHOT_KINDS",
    "ApplyOutcome",
    "CacheError",
    "CacheStats",
    "Change",
    "HybridCache",
    "InvalidRequest",
    "Kind",
    "KindPolicy",
    "KindStats",
    "NotFound",
    "PermissionDecision",
    "PermissionReason",
    "Read",
    "Snapshot",
    "Source",
    "Tier",
    "WhenWrapperDown",
    "WrapperSource",
    "WrapperUnavailable",
]
