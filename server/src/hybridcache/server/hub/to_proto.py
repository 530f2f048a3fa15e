"""Hub items -> WatchChanges messages, and the Kind enum both ways.

Only the four replicated kinds travel as values on the stream; the value and kind
conversions themselves are `convert.py`'s (top level), shared with the unary RPCs.
"""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from hybridcache.server import convert
from hybridcache.server.core.values import CreditCost, FeatureFlag, RolePermissions, UserStatus, Value
from hybridcache.server.hub.events import ResyncNeeded, Sequenced
from hybridcache.v1 import hybridcache_pb2 as pb

KIND_FROM_PROTO = convert.PROTO_TO_KIND


def change_event(item: Sequenced, resume_token: str) -> pb.WatchChangesResponse:
    event = item.event
    time = Timestamp()
    time.FromMilliseconds(event.event_time_ms)
    message = pb.ChangeEvent(
        sequence=item.tenant_sequence,  # the tenant's own numbering: the total order is internal
        resume_token=resume_token,
        tenant_id=event.tenant_id,
        kind=convert.KIND_TO_PROTO[event.kind],
        keys=event.keys,
        changed_fields=event.changed_fields,
        event_id=event.event_id,
        event_type=event.event_type,
        event_time=time,
        resync=event.resync,
        version=event.version,
        deleted=event.deleted,
    )
    if event.value is not None and not (event.deleted or event.resync):
        _set_new_value(message, event.value)
    return pb.WatchChangesResponse(change=message)


def _set_new_value(message: pb.ChangeEvent, value: Value) -> None:
    """Fill the `new_value` oneof; on-demand kinds (profiles, org units) carry no value."""
    match value:
        case CreditCost():
            convert.credit_cost(value, message.credit_cost)
        case RolePermissions():
            convert.role_permissions(value, message.role_permissions)
        case UserStatus():
            convert.user_status(value, message.user_status)
        case FeatureFlag():
            convert.feature_flag(value, message.feature_flag)
        case _:
            pass


def progress(sequence: int, resume_token: str) -> pb.WatchChangesResponse:
    return pb.WatchChangesResponse(progress=pb.Progress(sequence=sequence, resume_token=resume_token))


def resync_required(marker: ResyncNeeded, resume_token: str) -> pb.WatchChangesResponse:
    return pb.WatchChangesResponse(
        resync_required=pb.ResyncRequired(reason=marker.reason, resume_token=resume_token)
    )
