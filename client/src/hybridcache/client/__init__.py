"""hybridcache-client: a small typed client for the hybridcache gRPC service.

    from hybridcache.client import ClientConfig, HybridCacheClient, NotFound

    with HybridCacheClient("localhost:50051", ClientConfig(bearer_token="...")) as client:
        answer = client.get_credit_cost("acme", "crm.leads.create")
        print(answer.credit_cost.cost.value, answer.provenance.source)

Everything public is listed in `__all__` below; the modules starting with "_" are private.
The generated messages and stubs are in `hybridcache.v1`.
"""

from hybridcache.client._async_client import AsyncHybridCacheClient
from hybridcache.client._async_watch import AsyncWatchStream
from hybridcache.client._client import HybridCacheClient
from hybridcache.client._config import ClientConfig, KeepAliveConfig, RetryPolicy, TLSConfig, WatchConfig
from hybridcache.client._near_cache import NearCache, NearCacheProvenance, NearCacheStats
from hybridcache.client._permissions import LocalDecision
from hybridcache.client._watch import WatchStream
from hybridcache.client.errors import (
    Cancelled,
    DeadlineExceeded,
    HybridCacheError,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    from_rpc_error,
)
from hybridcache.client.reasons import ERROR_DOMAIN, Reason

__all__ = [
    "ERROR_DOMAIN",
    "AsyncHybridCacheClient",
    "AsyncWatchStream",
    "Cancelled",
    "ClientConfig",
    "DeadlineExceeded",
    "HybridCacheClient",
    "HybridCacheError",
    "Internal",
    "InvalidArgument",
    "KeepAliveConfig",
    "LocalDecision",
    "NearCache",
    "NearCacheProvenance",
    "NearCacheStats",
    "NotFound",
    "PermissionDenied",
    "Reason",
    "ResourceExhausted",
    "RetryPolicy",
    "TLSConfig",
    "Unauthenticated",
    "Unavailable",
    "WatchConfig",
    "WatchStream",
    "from_rpc_error",
]
