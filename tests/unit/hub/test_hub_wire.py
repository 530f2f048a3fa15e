"""The stream's pre-serialized messages: the same bytes the protobuf path builds, made once
per event for every subscriber, and batched around resync markers without reordering."""

from __future__ import annotations

import dataclasses
import threading

import pytest

from hybridcache.server.api.watch import _messages
from hybridcache.server.core.kinds import Kind
from hybridcache.server.core.values import (
    CreditCost,
    FeatureFlag,
    OrgUnit,
    RolePermissions,
    UserProfile,
    UserStatus,
)
from hybridcache.server.hub import (
    ANY_TENANT,
    REASON_FELL_BEHIND,
    ChangeHub,
    HubEvent,
    Item,
    ResyncNeeded,
    Sequenced,
    to_proto,
    wire,
)
from hybridcache.v1 import hybridcache_pb2 as pb
from tests.unit.hub.hub_support import event, only

pytestmark = pytest.mark.timeout(30)

COST = CreditCost("op.a", "2.5")
# Every shape a ChangeEvent takes: each replicated value kind, an on-demand kind (no value
# travels), a deletion, a kind-wide resync, no value at all, and long fields (2-byte lengths).
EVENTS: dict[str, HubEvent] = {
    "credit cost": dataclasses.replace(event(), value=COST, version=7),
    "role permissions": dataclasses.replace(
        event(kind=Kind.ROLE_PERMISSIONS, key="admin"),
        value=RolePermissions("admin", frozenset({"a.*", "b"})),
    ),
    "user status": dataclasses.replace(
        event(kind=Kind.USER_STATUS, key="u1"), value=UserStatus("u1", True, ("admin",))
    ),
    "feature flag": dataclasses.replace(
        event(kind=Kind.FEATURE_FLAGS, key="crm.ai"), value=FeatureFlag("crm.ai", True, '{"x":1}')
    ),
    "user profile": dataclasses.replace(
        event(kind=Kind.USER_PROFILES, key="u1"), value=UserProfile("u1", "Ann", "a@x", "", "", "", "")
    ),
    "org unit": dataclasses.replace(
        event(kind=Kind.ORG_UNITS, key="o1"), value=OrgUnit("o1", "S", "", "", (), ())
    ),
    "deleted": dataclasses.replace(event(), value=COST, deleted=True),
    "resync": dataclasses.replace(event(resync=True), value=COST),
    "no value": event(),
    "long": dataclasses.replace(event(key="k" * 300), changed_fields=tuple(f"f{i}" for i in range(100))),
}


def published(hub: ChangeHub, *events: HubEvent) -> list[Sequenced]:
    """Publish and read back the hub's own items (the ones streams encode)."""
    sub = hub.subscribe(only(ANY_TENANT))
    for e in events:
        hub.publish(e)
    items = sub.next(0)
    sub.close()
    assert all(isinstance(i, Sequenced) for i in items)
    return [i for i in items if isinstance(i, Sequenced)]


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, b"\x00"),
        (1, b"\x01"),
        (127, b"\x7f"),
        (128, b"\x80\x01"),
        (300, b"\xac\x02"),
        (2**32, b"\x80\x80\x80\x80\x10"),
    ],
)
def test_varint(value: int, encoded: bytes) -> None:
    assert wire.varint(value) == encoded
    # Cross-checked with protobuf itself: a Progress whose only field is the varint `sequence`.
    assert pb.Progress.FromString(b"\x08" + encoded).sequence == value


def test_varint_refuses_negative_numbers() -> None:
    with pytest.raises(ValueError, match="negative"):
        wire.varint(-1)


@pytest.mark.parametrize("name", sorted(EVENTS))
def test_encoded_change_is_the_protobuf_message_byte_for_byte(name: str) -> None:
    hub = ChangeHub()
    (item,) = published(hub, EVENTS[name])
    encoded = wire.encoded_change(item, hub)
    token = pb.WatchChangesResponse.FromString(encoded).change.resume_token  # sealed: new per call
    assert hub.resume_point(token).sequence == item.sequence
    built = to_proto.change_event(item, token)  # the per-subscriber path
    assert encoded == built.SerializeToString()
    assert pb.WatchChangesResponse.FromString(encoded) == built


def test_a_batch_decodes_to_its_events_in_order() -> None:
    hub = ChangeHub()
    items = published(hub, *EVENTS.values())
    batch = pb.WatchChangesResponse.FromString(
        wire.change_batch([wire.encoded_change(i, hub) for i in items])
    )
    assert batch.WhichOneof("message") == "changes"
    events = list(batch.changes.events)
    assert [hub.resume_point(e.resume_token).sequence for e in events] == [i.sequence for i in items]
    assert events == [
        to_proto.change_event(i, e.resume_token).change for i, e in zip(items, events, strict=True)
    ]


def test_encoded_once_for_every_subscriber_and_thread() -> None:
    hub = ChangeHub()
    (item,) = published(hub, EVENTS["credit cost"])
    results: list[bytes] = []
    start = threading.Barrier(8)

    def encode() -> None:
        start.wait()
        results.append(wire.encoded_change(item, hub))

    threads = [threading.Thread(target=encode) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(results) == 8
    assert all(r is results[0] for r in results)  # one object: built once, shared
    assert item.encoded is results[0]


def test_the_cache_is_not_part_of_the_items_value() -> None:
    hub = ChangeHub()
    (item,) = published(hub, EVENTS["credit cost"])
    fresh = Sequenced(item.sequence, item.event, item.tenant_sequence)
    wire.encoded_change(item, hub)
    assert item == fresh
    assert hash(item) == hash(fresh)
    assert "encoded" not in repr(item)


def decoded(messages: list[bytes], hub: ChangeHub) -> list[tuple[str, list[int]]]:
    """(message kind, sequences of its changes or the marker's resume sequence)."""
    out: list[tuple[str, list[int]]] = []
    for raw in messages:
        message = pb.WatchChangesResponse.FromString(raw)
        which = message.WhichOneof("message")
        if which == "change":
            out.append(("change", [message.change.sequence]))
        elif which == "changes":
            out.append(("changes", [e.sequence for e in message.changes.events]))
        else:
            assert which == "resync_required"
            point = hub.resume_point(message.resync_required.resume_token).sequence
            assert point is not None
            out.append(("resync", [point]))
    return out


def test_messages_batch_runs_of_changes_and_keep_markers_in_place() -> None:
    hub = ChangeHub()
    changes = published(hub, *(event(key=f"op.{i}") for i in range(7)))
    items: list[Item] = [*changes[:3], ResyncNeeded(REASON_FELL_BEHIND, 3), changes[3], *changes[4:]]
    assert decoded(list(_messages(items, hub, 2)), hub) == [
        ("changes", [1, 2]),
        ("change", [3]),  # a lone change goes as a plain `change`
        ("resync", [3]),
        ("changes", [4, 5]),
        ("changes", [6, 7]),
    ]
    assert decoded(list(_messages(items, hub, 1000)), hub) == [
        ("changes", [1, 2, 3]),
        ("resync", [3]),
        ("changes", [4, 5, 6, 7]),
    ]


def test_unbatched_messages_are_one_change_each_as_before() -> None:
    hub = ChangeHub()
    items: list[Item] = [*published(hub, event(key="a"), event(key="b")), ResyncNeeded(REASON_FELL_BEHIND, 2)]
    sent = [pb.WatchChangesResponse.FromString(m) for m in _messages(items, hub, 1)]
    assert [m.WhichOneof("message") for m in sent] == ["change", "change", "resync_required"]
    tokens = [m.change.resume_token or m.resync_required.resume_token for m in sent]
    assert [hub.resume_point(t).sequence for t in tokens] == [i.sequence for i in items]
    before = [
        (
            to_proto.resync_required(i, token)
            if isinstance(i, ResyncNeeded)
            else to_proto.change_event(i, token)
        ).SerializeToString()
        for i, token in zip(items, tokens, strict=True)
    ]
    assert [m.SerializeToString() for m in sent] == before
