"""The kinds of data the Wrapper owns, and how each is named on the wire."""

from __future__ import annotations

from enum import StrEnum


class Kind(StrEnum):
    """A kind of data. The value is the name used in configuration, URLs and logs."""

    CREDIT_COSTS = "credit-costs"
    ROLE_PERMISSIONS = "role-permissions"
    USER_STATUS = "user-status"
    FEATURE_FLAGS = "feature-flags"
    USER_PROFILES = "user-profiles"
    ORG_UNITS = "org-units"


class Tier(StrEnum):
    """How a kind is held: a full per-tenant replica, or fetched on demand and kept briefly."""

    REPLICA = "replica"
    ON_DEMAND = "on-demand"


class WhenWrapperDown(StrEnum):
    """What a read of an on-demand kind does when the Wrapper cannot be reached."""

    SERVE_STALE = "serve-stale"
    FAIL = "fail"
