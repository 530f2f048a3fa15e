"""The error reasons of the hybridcache service: the one table both sides import.

Every error the service sends carries a `google.rpc.ErrorInfo` whose `reason` is one of
these names (domain `hybridcache.dev`); the server takes each reason's gRPC status code
from this table, and the client exposes the reason as `HybridCacheError.reason`, a
`Reason` when it is one of these (compare with `==`, or use `is`):

    try:
        client.get_user_profile("acme", "user-1")
    except HybridCacheError as error:
        if error.reason == Reason.WRAPPER_REJECTED:
            page_the_operator()

Adding a reason is one line below: its name (twice: the member and the wire text, which a
test holds equal), its status code, and what it means (the
README's table is generated from these lines by scripts/reason_table.py, and a test keeps
it true). Pick the code by what the caller can do about it: UNAVAILABLE only when a retry
may help (the client retries UNAVAILABLE and nothing else); a fault in the service's own
configuration is INTERNAL, never UNAVAILABLE, so it is not retried and is seen at once.
"""

# ruff: noqa: E501 - the table below keeps one line per reason (see the comment there)

from __future__ import annotations

from enum import StrEnum

import grpc

__all__ = ["ERROR_DOMAIN", "Reason"]

ERROR_DOMAIN = "hybridcache.dev"
"""`google.rpc.ErrorInfo.domain` of every error the service makes itself."""

_C = grpc.StatusCode


class Reason(StrEnum):
    """A machine-readable error reason; `.code` is its gRPC status, `.meaning` its sense."""

    code: grpc.StatusCode
    meaning: str

    def __new__(cls, value: str, code: grpc.StatusCode, meaning: str) -> Reason:
        member = str.__new__(cls, value)
        member._value_ = value
        member.code = code
        member.meaning = meaning
        return member

    # One line per reason, however long (hence the fmt/E501 exemptions): a merge then adds lines.
    # fmt: off
    # --- INVALID_ARGUMENT: the request can never succeed as asked
    FIELD_REQUIRED = "FIELD_REQUIRED", _C.INVALID_ARGUMENT, "A required field is empty (or a list names nothing)."
    FIELD_TOO_LONG = "FIELD_TOO_LONG", _C.INVALID_ARGUMENT, "A field is longer than its limit."
    FIELD_INVALID = "FIELD_INVALID", _C.INVALID_ARGUMENT, "A field has characters outside its allowed set."
    MALFORMED_REQUEST = "MALFORMED_REQUEST", _C.INVALID_ARGUMENT, "The request body is not the method's protobuf message."
    NO_REQUEST = "NO_REQUEST", _C.INVALID_ARGUMENT, "The call carried no request message (within the request timeout)."
    BATCH_TOO_LARGE = "BATCH_TOO_LARGE", _C.INVALID_ARGUMENT, "A batch names more entries than allowed (1,000)."
    INVALID_ARGUMENT = "INVALID_ARGUMENT", _C.INVALID_ARGUMENT, "The request is malformed (e.g. a WatchChanges filter)."
    INVALID_RESUME_TOKEN = "INVALID_RESUME_TOKEN", _C.INVALID_ARGUMENT, "The resume token is malformed or from the future."
    KIND_NOT_CONFIGURED = "KIND_NOT_CONFIGURED", _C.INVALID_ARGUMENT, "The data kind is not configured on this server."
    KIND_NOT_REPLICATED = "KIND_NOT_REPLICATED", _C.INVALID_ARGUMENT, "The data kind is served on demand here, not replicated (ListSnapshot lists replicated kinds only)."
    # --- NOT_FOUND: an answer, not a failure
    NOT_FOUND = "NOT_FOUND", _C.NOT_FOUND, "The item does not exist."
    TENANT_NOT_FOUND = "TENANT_NOT_FOUND", _C.NOT_FOUND, "The tenant does not exist."
    # --- credentials and limits of the caller
    MISSING_CREDENTIALS = "MISSING_CREDENTIALS", _C.UNAUTHENTICATED, "The call carried no bearer token."
    CERTIFICATE_MISMATCH = "CERTIFICATE_MISMATCH", _C.UNAUTHENTICATED, "A caller bound to a client certificate presented another (mTLS)."
    INVALID_CREDENTIALS = "INVALID_CREDENTIALS", _C.UNAUTHENTICATED, "The bearer token is unknown."
    TENANT_NOT_ALLOWED = "TENANT_NOT_ALLOWED", _C.PERMISSION_DENIED, "The caller's credentials do not cover this tenant."
    RATE_LIMITED = "RATE_LIMITED", _C.RESOURCE_EXHAUSTED, "The caller exceeded its rate limit (with RetryInfo)."
    TOO_MANY_IN_FLIGHT = "TOO_MANY_IN_FLIGHT", _C.RESOURCE_EXHAUSTED, "The caller has too many calls in progress (with RetryInfo)."
    SERVER_BUSY = "SERVER_BUSY", _C.RESOURCE_EXHAUSTED, "The server's lane for this kind of call is full (with RetryInfo)."
    TOO_MANY_STREAMS = "TOO_MANY_STREAMS", _C.RESOURCE_EXHAUSTED, "Too many WatchChanges streams are open (in all, or this caller's)."
    # --- UNAVAILABLE: a retry may help, and the answer came before the caller's deadline
    WRAPPER_UNAVAILABLE = "WRAPPER_UNAVAILABLE", _C.UNAVAILABLE, "The Wrapper could not answer."
    WRAPPER_UNREACHABLE = "WRAPPER_UNREACHABLE", _C.UNAVAILABLE, "The Wrapper cannot be reached (connection refused or reset)."
    WRAPPER_TIMEOUT = "WRAPPER_TIMEOUT", _C.UNAVAILABLE, "The Wrapper did not answer within the call timeout."
    WRAPPER_DEADLINE = "WRAPPER_DEADLINE", _C.UNAVAILABLE, "The caller's deadline left no time for (another) Wrapper call."
    WRAPPER_ERROR = "WRAPPER_ERROR", _C.UNAVAILABLE, "The Wrapper failed (HTTP 5xx, or another unexpected status)."
    WRAPPER_KNOWN_DOWN = "WRAPPER_KNOWN_DOWN", _C.UNAVAILABLE, "The Wrapper is known to be down (its circuit breaker is open): failed at once."
    WRAPPER_BUSY = "WRAPPER_BUSY", _C.UNAVAILABLE, "Too many snapshot loads in progress; none finished in time."
    WRAPPER_BAD_RESPONSE = "WRAPPER_BAD_RESPONSE", _C.UNAVAILABLE, "The Wrapper sent a body that is not what its API promises."
    SHUTTING_DOWN = "SHUTTING_DOWN", _C.UNAVAILABLE, "The server is shutting down (streams end with it)."
    # --- the service itself: no retry will help; an operator must act
    WRAPPER_REJECTED = "WRAPPER_REJECTED", _C.INTERNAL, "The Wrapper refused the service's credentials (HTTP 401/403)."
    CACHE_ERROR = "CACHE_ERROR", _C.INTERNAL, "An unexpected fault in the service."
    NOT_ENABLED = "NOT_ENABLED", _C.UNIMPLEMENTED, "The method is not served by this handler."
    # fmt: on

    @classmethod
    def parse(cls, text: str) -> Reason | None:
        """The reason named `text`, or None when it is not one (an older or newer server's)."""
        return cls.__members__.get(text)  # a member's name is its value (a test holds them equal)
