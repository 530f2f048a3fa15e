"""Hub items -> the bytes a WatchChanges stream sends, each change serialized once for all.

A change's `ChangeEvent` does not depend on who receives it (filters choose events, they
never alter one), so with 100 subscribers building and serializing it per subscriber would
be 99 wasted copies. Protobuf's wire format lets the serialized form be reused as is: a
message whose only set field is length-delimited is that field's tag, the payload's length
as a varint, and the payload. With the field numbers of hybridcache.proto:

    WatchChangesResponse{change: e}        = 0x0A <len e> e            (field 1)
    ChangeBatch{events: [e1, e2, ...]}     = 0x0A <len e1> e1 0x0A <len e2> e2 ...
    WatchChangesResponse{changes: batch}   = 0x22 <len batch> batch    (field 4)

so an item's `encoded` bytes ("0x0A <len e> e") are both a whole single-change message and
one element of a batch. The encoder is these few lines rather than protobuf internals; the
tests check its output decodes to what the protobuf path builds.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from hybridcache.server.hub import to_proto
from hybridcache.server.hub.events import Sequenced
from hybridcache.v1 import hybridcache_pb2 as pb

if TYPE_CHECKING:
    from hybridcache.server.hub.hub import ChangeHub

_LENGTH_DELIMITED = 2  # protobuf wire type of strings, bytes and embedded messages
CHANGE_FIELD = pb.WatchChangesResponse.CHANGE_FIELD_NUMBER
CHANGES_FIELD = pb.WatchChangesResponse.CHANGES_FIELD_NUMBER
# The reuse above holds only while both fields share a number; fail at import, not on the wire.
assert pb.ChangeBatch.EVENTS_FIELD_NUMBER == CHANGE_FIELD, "ChangeBatch.events must be field 1"

# Serializes the first encoding of an item, so it happens once however many stream threads
# reach the same new item together; later reads of `encoded` take no lock.
_encode_lock = threading.Lock()


def varint(value: int) -> bytes:
    """Protobuf base-128 varint of a non-negative int: 7 bits a byte, low bits first."""
    if value < 0:
        raise ValueError("varint of a negative number")
    if value < 0x80:
        return bytes((value,))  # the common case: tags and lengths under 128
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def length_delimited(field_number: int, payload: bytes) -> bytes:
    """One length-delimited field: tag, varint length, payload."""
    return varint(field_number << 3 | _LENGTH_DELIMITED) + varint(len(payload)) + payload


def encoded_change(item: Sequenced, hub: ChangeHub) -> bytes:
    """`item` as a serialized `WatchChangesResponse{change}` (= one `ChangeBatch` element),
    built on first use and kept on the item for every other subscriber."""
    encoded = item.encoded
    if encoded is None:
        with _encode_lock:
            encoded = item.encoded
            if encoded is None:
                token = item.resume_token or hub.token(item.sequence)
                event = to_proto.change_event(item, token).change
                encoded = length_delimited(CHANGE_FIELD, event.SerializeToString())
                # Sequenced is frozen for its value; `encoded` is its one cache slot.
                object.__setattr__(item, "encoded", encoded)
    return encoded


def change_batch(encoded_changes: Sequence[bytes]) -> bytes:
    """A serialized `WatchChangesResponse{changes}` of already encoded changes, in order."""
    return length_delimited(CHANGES_FIELD, b"".join(encoded_changes))
