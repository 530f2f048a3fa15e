"""Domain errors raised by the cache core and the Wrapper client.

    CacheError
    ├── NotFound            the tenant or entity does not exist (an answer, not a failure)
    ├── WrapperUnavailable  the Wrapper could not answer in time; a retry may help
    └── InvalidRequest      the request can never succeed as asked

The gRPC layer maps each to one status code in one table (`hybridcache.server.errors`).
"""

from __future__ import annotations


class CacheError(Exception):
    """Base of the domain errors. `reason` is a short machine-readable UPPER_SNAKE word."""

    reason = "CACHE_ERROR"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class NotFound(CacheError):  # noqa: N818 (the names are the API)
    reason = "NOT_FOUND"


class WrapperUnavailable(CacheError):  # noqa: N818 (the names are the API)
    reason = "WRAPPER_UNAVAILABLE"


class InvalidRequest(CacheError):  # noqa: N818 (the names are the API)
    reason = "INVALID_ARGUMENT"
