"""The one exception tree of hybridcache-client.

Every failed call raises a subclass of `HybridCacheError`, chained (`raise ... from`) to
the `grpc.RpcError` it came from. The class is chosen by the gRPC status code alone:

    HybridCacheError                  base: .code .message .reason .domain .metadata .retry_after
    ├── InvalidArgument               INVALID_ARGUMENT, OUT_OF_RANGE   (fix the request)
    ├── NotFound                      NOT_FOUND                        (the data does not exist)
    ├── PermissionDenied              PERMISSION_DENIED                (tenant not allowed)
    ├── Unauthenticated               UNAUTHENTICATED                  (missing / bad token)
    ├── ResourceExhausted             RESOURCE_EXHAUSTED               (.retry_after if given)
    ├── Unavailable                   UNAVAILABLE                      (retries exhausted)
    ├── DeadlineExceeded              DEADLINE_EXCEEDED
    ├── Cancelled                     CANCELLED
    └── Internal                      INTERNAL, UNKNOWN, DATA_LOSS and every other code

`reason`, `domain` ("hybridcache.dev") and `metadata` come from the `google.rpc.ErrorInfo`
the server attaches (`reason` is a `Reason` of hybridcache.client.reasons, the table the
server uses too, when the client knows it; the text otherwise); `retry_after` (seconds)
from a `google.rpc.RetryInfo`. They are empty / None when the status had no details (e.g.
errors made by gRPC itself, such as a deadline that expired on the client).
"""

# ruff: noqa: N818 - the classes are named after the gRPC status codes they stand for,
# as python-etcd3 and google-api-core do; an "Error" suffix on each would only add noise.

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import grpc

from hybridcache.client._status_details import StatusDetails, details_from_trailers
from hybridcache.client.reasons import Reason

__all__ = [
    "Cancelled",
    "DeadlineExceeded",
    "HybridCacheError",
    "Internal",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
    "from_rpc_error",
]


class HybridCacheError(Exception):
    """A call to the hybridcache service failed."""

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode,
        reason: str = "",
        domain: str = "",
        metadata: Mapping[str, str] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        """The gRPC status code."""
        self.message = message
        """The server's (or gRPC's) human-readable message."""
        self.reason: str = Reason.parse(reason) or reason
        """The machine-readable reason (google.rpc.ErrorInfo.reason): a `Reason` when known,
        the text otherwise, "" when not given. Compare with `==` to a `Reason` member."""
        self.domain = domain
        """The reason's domain, "hybridcache.dev" for the server's own errors."""
        self.metadata: Mapping[str, str] = dict(metadata or {})
        """Further facts about the error (google.rpc.ErrorInfo.metadata)."""
        self.retry_after = retry_after
        """Seconds the server asked to wait before retrying (google.rpc.RetryInfo), or None."""

    def __str__(self) -> str:
        name = getattr(self.code, "name", str(self.code))
        reason = f" [{self.reason}]" if self.reason else ""
        return f"{name}{reason}: {self.message}"


class InvalidArgument(HybridCacheError):
    """The request is malformed (bad id, too many keys): retrying will not help."""


class NotFound(HybridCacheError):
    """The tenant or item does not exist."""


class PermissionDenied(HybridCacheError):
    """The caller's credentials do not allow reading this tenant."""


class Unauthenticated(HybridCacheError):
    """The caller sent no valid credentials."""


class ResourceExhausted(HybridCacheError):
    """The server (or a limit of the caller) is at capacity; see `retry_after`."""


class Unavailable(HybridCacheError):
    """The service could not answer; the client's retry policy already retried."""


class DeadlineExceeded(HybridCacheError):
    """The call's deadline passed before an answer arrived."""


class Cancelled(HybridCacheError):
    """The call was cancelled (by the caller, or the server went away mid-call)."""


class Internal(HybridCacheError):
    """A server fault, or a status code this client has no class for (see `code`)."""


_ERROR_BY_CODE: dict[grpc.StatusCode, type[HybridCacheError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.OUT_OF_RANGE: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.CANCELLED: Cancelled,
}


def _call_attr(error: Any, name: str) -> Any:
    # A grpc.RpcError raised by gRPC is also a grpc.Call (sync) or an AioRpcError (async),
    # both with code() / details() / trailing_metadata(); one raised by an interceptor or
    # test double may have none of them.
    method = getattr(error, name, None)
    return method() if callable(method) else None


def from_rpc_error(error: grpc.RpcError) -> HybridCacheError:
    """Map a grpc.RpcError to the exception tree (the caller raises it `from` the error)."""
    code = _call_attr(error, "code") or grpc.StatusCode.UNKNOWN
    message = _call_attr(error, "details") or ""
    trailers: Iterable[tuple[str, str | bytes]] | None = _call_attr(error, "trailing_metadata")
    details = details_from_trailers(trailers)
    # Trust the details only when they describe this status: a proxy could have rewritten
    # the code while passing an unrelated trailer through.
    if details is not None and details.code != code.value[0]:
        details = None
    details = details or StatusDetails(code=code.value[0], message=message)
    error_type = _ERROR_BY_CODE.get(code, Internal)
    return error_type(
        details.message or message,
        code=code,
        reason=details.reason,
        domain=details.domain,
        metadata=details.metadata,
        retry_after=details.retry_delay,
    )
