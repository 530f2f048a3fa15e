"""Errors -> gRPC status with a google.rpc.ErrorInfo detail; the reason decides the code.

Callers get a machine-readable reason (ErrorInfo.reason, domain `hybridcache.dev`) next
to the human message (and a google.rpc.RetryInfo on refusals that a retry may fix, never
below RETRY_FLOOR_S). Every reason and its status code is one line of the table both sides
import (`hybridcache.client.reasons.Reason`); `hybridcache.client` maps the codes back to
one exception tree.
"""

from __future__ import annotations

import random
from typing import NoReturn

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from hybridcache.client.reasons import ERROR_DOMAIN, Reason
from hybridcache.server.core.errors import CacheError

__all__ = [
    "ERROR_DOMAIN",
    "RETRY_FLOOR_S",
    "Reason",
    "abort",
    "abort_with",
    "retry_delay_s",
    "status_code_for",
]

# A RetryInfo delay is never below this, plus up to as much again at random: a delay near 0
# would invite an instant retry storm, and the same delay for every refused caller would
# bring them back together.
RETRY_FLOOR_S = 0.05


def status_code_for(error: CacheError) -> grpc.StatusCode:
    return error.reason.code


def abort(
    context: grpc.ServicerContext,
    reason: Reason,
    message: str,
    *,
    metadata: dict[str, str] | None = None,
    retry_after_s: float | None = None,
) -> NoReturn:
    """End the RPC with `reason`'s status code, `message` and an ErrorInfo (and RetryInfo when
    given)."""
    code = reason.code
    info = error_details_pb2.ErrorInfo(reason=reason.value, domain=ERROR_DOMAIN, metadata=metadata or {})
    details = [any_pb2.Any()]
    details[0].Pack(info)
    if retry_after_s is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(retry_delay_s(retry_after_s) * 1e9))
        retry = any_pb2.Any()
        retry.Pack(error_details_pb2.RetryInfo(retry_delay=delay))
        details.append(retry)
    status = status_pb2.Status(code=getattr(code_pb2, code.name), message=message, details=details)
    context.abort_with_status(rpc_status.to_status(status))
    raise AssertionError("abort_with_status returned")  # it raises; this line keeps NoReturn honest


def retry_delay_s(wanted_s: float) -> float:
    """The delay a RetryInfo carries for a wanted one: at least the floor, jittered."""
    return max(wanted_s, RETRY_FLOOR_S) + random.uniform(0, RETRY_FLOOR_S)


def abort_with(context: grpc.ServicerContext, error: CacheError) -> NoReturn:
    abort(context, error.reason, str(error))
