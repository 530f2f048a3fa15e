"""The change hub: sequencing, retention, fan-out and resume of change events.

Pure (no gRPC, no Redis): the event ingestion publishes `HubEvent`s, the WatchChanges
handler (`hybridcache.server.api.watch`) subscribes with a `WatchFilter`.
"""

from hybridcache.server.hub.events import (
    REASON_FELL_BEHIND,
    REASON_OUTSIDE_WINDOW,
    REASON_UNKNOWN_INSTANCE,
    HubEvent,
    Item,
    ResyncNeeded,
    Sequenced,
)
from hybridcache.server.hub.filters import (
    ANY_TENANT,
    AllowedTenants,
    TenantNotAllowedError,
    WatchFilter,
    resolve_tenants,
)
from hybridcache.server.hub.hub import ChangeHub, HubStats, Subscription
from hybridcache.server.hub.limiter import StreamLimiter, StreamLimitError, StreamSlot
from hybridcache.server.hub.tokens import ResumePoint, TokenSealer, instance_of

__all__ = [
    "ANY_TENANT",
    "REASON_FELL_BEHIND",
    "REASON_OUTSIDE_WINDOW",
    "REASON_UNKNOWN_INSTANCE",
    "AllowedTenants",
    "ChangeHub",
    "HubEvent",
    "HubStats",
    "Item",
    "ResumePoint",
    "ResyncNeeded",
    "Sequenced",
    "StreamLimitError",
    "StreamLimiter",
    "StreamSlot",
    "Subscription",
    "TenantNotAllowedError",
    "TokenSealer",
    "WatchFilter",
    "instance_of",
    "resolve_tenants",
]
