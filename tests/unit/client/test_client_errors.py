"""grpc.RpcError -> the client's exception tree."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc
import pytest
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2

from hybridcache.client import errors
from hybridcache.client._status_details import STATUS_DETAILS_KEY


class FakeRpcError(grpc.RpcError):
    """What gRPC raises: an RpcError that is also a Call."""

    def __init__(
        self, code: grpc.StatusCode, details: str, trailers: Sequence[tuple[str, str | bytes]] = ()
    ) -> None:
        super().__init__()
        self._code, self._details, self._trailers = code, details, tuple(trailers)

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> tuple[Any, ...]:
        return self._trailers


EXPECTED = [
    (grpc.StatusCode.INVALID_ARGUMENT, errors.InvalidArgument),
    (grpc.StatusCode.OUT_OF_RANGE, errors.InvalidArgument),
    (grpc.StatusCode.NOT_FOUND, errors.NotFound),
    (grpc.StatusCode.PERMISSION_DENIED, errors.PermissionDenied),
    (grpc.StatusCode.UNAUTHENTICATED, errors.Unauthenticated),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, errors.ResourceExhausted),
    (grpc.StatusCode.UNAVAILABLE, errors.Unavailable),
    (grpc.StatusCode.DEADLINE_EXCEEDED, errors.DeadlineExceeded),
    (grpc.StatusCode.CANCELLED, errors.Cancelled),
    (grpc.StatusCode.INTERNAL, errors.Internal),
    (grpc.StatusCode.UNKNOWN, errors.Internal),
    (grpc.StatusCode.DATA_LOSS, errors.Internal),
    (grpc.StatusCode.UNIMPLEMENTED, errors.Internal),
    (grpc.StatusCode.FAILED_PRECONDITION, errors.Internal),
    (grpc.StatusCode.ABORTED, errors.Internal),
    (grpc.StatusCode.ALREADY_EXISTS, errors.Internal),
]


def test_every_error_code_is_in_the_table() -> None:
    assert {code for code, _ in EXPECTED} == set(grpc.StatusCode) - {grpc.StatusCode.OK}


@pytest.mark.parametrize(("code", "expected"), EXPECTED, ids=[c.name for c, _ in EXPECTED])
def test_code_maps_to_class(code: grpc.StatusCode, expected: type[errors.HybridCacheError]) -> None:
    mapped = errors.from_rpc_error(FakeRpcError(code, "boom"))
    assert type(mapped) is expected
    assert isinstance(mapped, errors.HybridCacheError)
    assert (mapped.code, mapped.message, mapped.reason, dict(mapped.metadata)) == (code, "boom", "", {})
    assert mapped.retry_after is None
    assert str(mapped) == f"{code.name}: boom"


def _rich_trailers(code: int, *details: object) -> list[tuple[str, str | bytes]]:
    packed = []
    for detail in details:
        any_detail = any_pb2.Any()
        any_detail.Pack(detail)  # type: ignore[arg-type]
        packed.append(any_detail)
    status = status_pb2.Status(code=code, message="too many requests", details=packed)
    return [(STATUS_DETAILS_KEY, status.SerializeToString())]


def test_rich_status_gives_reason_metadata_and_retry_after() -> None:
    info = error_details_pb2.ErrorInfo(
        reason="TENANT_RATE_LIMITED", domain="hybridcache.dev", metadata={"tenant_id": "acme"}
    )
    retry = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=1, nanos=500_000_000))
    error = FakeRpcError(
        grpc.StatusCode.RESOURCE_EXHAUSTED, "too many requests", _rich_trailers(8, info, retry)
    )
    mapped = errors.from_rpc_error(error)
    assert isinstance(mapped, errors.ResourceExhausted)
    assert mapped.reason == "TENANT_RATE_LIMITED"
    assert mapped.domain == "hybridcache.dev"
    assert mapped.metadata == {"tenant_id": "acme"}
    assert mapped.retry_after == 1.5
    assert str(mapped) == "RESOURCE_EXHAUSTED [TENANT_RATE_LIMITED]: too many requests"


def test_details_of_another_code_are_ignored() -> None:
    info = error_details_pb2.ErrorInfo(reason="STALE", domain="hybridcache.dev")
    error = FakeRpcError(grpc.StatusCode.UNAVAILABLE, "proxy said no", _rich_trailers(5, info))
    mapped = errors.from_rpc_error(error)
    assert isinstance(mapped, errors.Unavailable)
    assert (mapped.reason, mapped.message) == ("", "proxy said no")


def test_garbage_trailer_still_maps_the_code() -> None:
    error = FakeRpcError(grpc.StatusCode.NOT_FOUND, "nope", [(STATUS_DETAILS_KEY, b"\xff\xff")])
    mapped = errors.from_rpc_error(error)
    assert isinstance(mapped, errors.NotFound)
    assert mapped.reason == ""


def test_bare_rpc_error_is_internal() -> None:
    mapped = errors.from_rpc_error(grpc.RpcError())
    assert isinstance(mapped, errors.Internal)
    assert mapped.code == grpc.StatusCode.UNKNOWN
