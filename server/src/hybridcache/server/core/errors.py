"""Domain errors raised by the cache core and the Wrapper client.

    CacheError
    ├── NotFound            the tenant or entity does not exist (an answer, not a failure)
    ├── WrapperUnavailable  the Wrapper gave no usable answer (a retry may help, unless the
    │                       reason is WRAPPER_REJECTED: a configuration fault)
    └── InvalidRequest      the request can never succeed as asked

Each carries a `Reason` from the one table of error reasons (`hybridcache.client.reasons`,
shared with the client), and the reason alone decides the gRPC status code
(`hybridcache.server.api.errors`): a `WrapperUnavailable` whose reason is `WRAPPER_REJECTED`
(the Wrapper refused our credentials) is INTERNAL, not UNAVAILABLE, because no retry mends it.
"""

from __future__ import annotations

from hybridcache.client.reasons import Reason


class CacheError(Exception):
    """Base of the domain errors. `reason` is the machine-readable reason (one table)."""

    reason: Reason = Reason.CACHE_ERROR

    def __init__(self, message: str, *, reason: Reason | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = Reason.__members__[str(reason)]  # an unknown text fails here, not later


class NotFound(CacheError):  # noqa: N818 (the names are the API)
    reason = Reason.NOT_FOUND


class WrapperUnavailable(CacheError):  # noqa: N818 (the names are the API)
    reason = Reason.WRAPPER_UNAVAILABLE


class InvalidRequest(CacheError):  # noqa: N818 (the names are the API)
    reason = Reason.INVALID_ARGUMENT
