"""Hub items -> WatchChanges messages, and the Kind enum both ways.

Minimal on purpose: only the four replicated kinds travel as values on the stream. The
lead's `convert.py` is the general domain->proto home; these will move there.
"""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from hybridcache.server.core.kinds import Kind
from hybridcache.server.core.values import CreditCost, FeatureFlag, RolePermissions, UserStatus, Value
from hybridcache.server.hub.events import ResyncNeeded, Sequenced
from hybridcache.v1 import hybridcache_pb2 as pb

KIND_TO_PROTO: dict[Kind, pb.Kind.ValueType] = {kind: pb.Kind.Value(f"KIND_{kind.name}") for kind in Kind}
KIND_FROM_PROTO: dict[int, Kind] = {number: kind for kind, number in KIND_TO_PROTO.items()}


def change_event(item: Sequenced, resume_token: str) -> pb.WatchChangesResponse:
    event = item.event
    time = Timestamp()
    time.FromMilliseconds(event.event_time_ms)
    message = pb.ChangeEvent(
        sequence=item.sequence,
        resume_token=resume_token,
        tenant_id=event.tenant_id,
        kind=KIND_TO_PROTO[event.kind],
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
            message.credit_cost.operation_code = value.operation_code
            message.credit_cost.cost.value = value.cost
        case RolePermissions():
            message.role_permissions.role_id = value.role_id
            message.role_permissions.permissions.extend(sorted(value.permissions))
        case UserStatus():
            message.user_status.user_id = value.user_id
            message.user_status.active = value.active
            message.user_status.role_ids.extend(value.role_ids)
        case FeatureFlag():
            message.feature_flag.flag_key = value.flag_key
            message.feature_flag.enabled = value.enabled
            message.feature_flag.value = value.value
        case _:
            pass


def progress(sequence: int, resume_token: str) -> pb.WatchChangesResponse:
    return pb.WatchChangesResponse(progress=pb.Progress(sequence=sequence, resume_token=resume_token))


def resync_required(marker: ResyncNeeded, resume_token: str) -> pb.WatchChangesResponse:
    return pb.WatchChangesResponse(
        resync_required=pb.ResyncRequired(reason=marker.reason, resume_token=resume_token)
    )
