"""Request field limits, checked before anything else happens.

The id shapes are `ids.py`'s table (shared with WatchChanges filters and change
notifications): short, printable, free of URL and channel separators and never only dots,
so a key can never escape its tenant and nothing odd reaches a URL, a log line or a Redis
channel. Operation codes per batch: 1-1000.
"""

from __future__ import annotations

from hybridcache.client.reasons import Reason
from hybridcache.server import ids
from hybridcache.server.core.errors import InvalidRequest

MAX_BATCH = 1000


def _check(shape: ids.IdShape, value: str, field: str) -> str:
    if not shape.matches(value):
        if not value:
            raise InvalidRequest(f"{field} is required", reason=Reason.FIELD_REQUIRED)
        if len(value) > shape.max_length:
            raise InvalidRequest(
                f"{field} is longer than {shape.max_length} characters", reason=Reason.FIELD_TOO_LONG
            )
        raise InvalidRequest(f"{field} may only contain {shape.characters}", reason=Reason.FIELD_INVALID)
    return value


def check_tenant_id(value: str) -> str:
    return _check(ids.TENANT, value, "tenant_id")


def check_key(value: str, field: str) -> str:
    return _check(ids.KEY, value, field)


def check_user_id(value: str) -> str:
    return _check(ids.USER, value, "user_id")


def check_permission(value: str) -> str:
    return _check(ids.PERMISSION, value, "permission")


def check_batch(values: list[str], field: str) -> list[str]:
    """Validate every code; return them de-duplicated in the order first asked."""
    if not values:
        raise InvalidRequest(f"{field} must name at least one entry", reason=Reason.FIELD_REQUIRED)
    if len(values) > MAX_BATCH:
        raise InvalidRequest(f"{field} may name at most {MAX_BATCH} entries", reason=Reason.BATCH_TOO_LARGE)
    return [check_key(v, field) for v in dict.fromkeys(values)]
