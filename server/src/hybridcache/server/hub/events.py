"""What flows through the hub: published events, their sequenced form, resync markers."""

from __future__ import annotations

from dataclasses import dataclass, field

from hybridcache.server.events.ports import ChangeNotice

# ResyncNeeded reasons; the wire carries them verbatim (ResyncRequired.reason).
REASON_UNKNOWN_INSTANCE = "unknown server instance"
REASON_OUTSIDE_WINDOW = "resume token outside the retained window"
REASON_FELL_BEHIND = "subscriber fell behind"
REASON_OTHER_KEY = "resume token sealed with another key"


# What producers publish (no sequence yet) is exactly what the change feed produces: one
# type for both, so nothing copies it field by field. `resync` means the whole `kind` of the
# tenant was reloaded (`keys` empty); `value` is the new value of a replicated kind, None for
# on-demand kinds, deletions and resyncs.
HubEvent = ChangeNotice


@dataclass(frozen=True, slots=True)
class Sequenced:
    """An event with its place in this hub's total order (1, 2, 3, ... per process), and
    in its tenant's own order (`tenant_sequence`, 1, 2, 3, ... per tenant).

    The total order is internal: resume positions are sealed in tokens (`tokens.py`). The
    stream shows `tenant_sequence`, which counts only changes of a tenant the subscriber
    reads, so it reveals nothing about the others."""

    sequence: int
    event: HubEvent
    tenant_sequence: int = 0
    # Durable mode: the Redis stream entry id (ms, seq) this item comes at, never below an
    # earlier item's (an item of the repair worker gets the position reached so far).
    position: tuple[int, int] | None = None
    # The item as a stream sends it, serialized once for every subscriber by the first
    # stream that sends it (`hub.wire.encoded_change`, the only writer). A cache, not part
    # of the value: left out of comparison, hashing and repr.
    encoded: bytes | None = field(default=None, compare=False, repr=False)
    # A catch-up item (a fleet resume replayed from the Redis stream, api/catch_up.py) carries
    # its own resume token: until the catch-up is complete, resuming means starting it over.
    resume_token: str | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class ResyncNeeded:
    """The subscriber missed events that cannot be replayed: reload state, then keep reading.

    `sequence` is the position the stream continues from: every matching event after it
    will be delivered, so a token for it is a valid resume point after the reload.
    """

    reason: str
    sequence: int


Item = Sequenced | ResyncNeeded
