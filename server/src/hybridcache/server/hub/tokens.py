"""Resume tokens: opaque, sealed positions in this server instance's change sequence.

A token is ``"<instance_id>.<sealed>"``: the instance id in clear, and the position
(the hub's internal sequence number) sealed with AES-GCM under a key random per hub, with
a random nonce and the instance id as associated data, URL-safe base64 without padding.
Why sealed: the hub numbers every change of every tenant in one sequence, so a position in
clear would let a caller bound to `acme` count `globex`'s changes between two of its own
tokens. Sealed, a token says nothing, and two tokens for the same position differ (a
heartbeat's token does not even show whether anything happened elsewhere).

The instance id stays in clear so that a token from a previous run (or another replica
behind the same address) is recognised as foreign and answered with "resync required",
while a token of this instance that does not open (tampered, forged, truncated) is a
`ValueError`, which the stream handler answers with INVALID_ARGUMENT.

The sealed payload is versioned (its first byte) so that a later kind of position — a
Redis stream id in durable mode, sealed with a key the fleet shares, so that a token
survives a restart — can be added without a new token syntax.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

# Instance ids are chosen by us (`secrets.token_hex`) or by configuration; keeping them to
# this alphabet means the '.' separator is unambiguous.
INSTANCE_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_TOKEN_RE = re.compile(r"([A-Za-z0-9_-]{1,64})\.([A-Za-z0-9_-]{1,80})")
MAX_TOKEN_LENGTH = 120  # the longest a token can be (64 + 1 + 50), rounded up
_MAX_SEQUENCE = 2**63 - 1
_NONCE_BYTES = 12
_PAYLOAD = struct.Struct(">BQ")  # version, sequence
_VERSION_SEQUENCE = 1


@dataclass(frozen=True, slots=True)
class ResumePoint:
    """Where a client wants to resume: after `sequence` of server instance `instance_id`
    (None: a token of another instance, whose position this one cannot read)."""

    instance_id: str
    sequence: int | None


def instance_of(token: str) -> str:
    """The instance a token was issued by (no key needed). ValueError if malformed."""
    match = _TOKEN_RE.fullmatch(token)
    if match is None:
        raise ValueError("malformed resume token")
    return match.group(1)


class TokenSealer:
    """Seals and opens the positions of one instance. Thread-safe (AESGCM is)."""

    def __init__(self, instance_id: str, key: bytes | None = None) -> None:
        if not INSTANCE_ID_RE.fullmatch(instance_id):
            raise ValueError("instance id must be 1-64 characters of [A-Za-z0-9_-]")
        self.instance_id = instance_id
        self._aad = instance_id.encode("ascii")
        self._aead = AESGCM(key if key is not None else AESGCM.generate_key(bit_length=128))

    def seal(self, sequence: int) -> str:
        """The token that resumes after `sequence`; a new one on every call."""
        if not 0 <= sequence <= _MAX_SEQUENCE:
            raise ValueError("sequence must be a non-negative int64")
        nonce = secrets.token_bytes(_NONCE_BYTES)
        sealed = nonce + self._aead.encrypt(nonce, _PAYLOAD.pack(_VERSION_SEQUENCE, sequence), self._aad)
        return f"{self.instance_id}.{base64.urlsafe_b64encode(sealed).rstrip(b'=').decode('ascii')}"

    def open(self, token: str) -> ResumePoint:
        """Parse a token from the network. ValueError for anything this instance did not seal."""
        instance_id = instance_of(token)
        if instance_id != self.instance_id:
            return ResumePoint(instance_id, None)
        encoded = token[len(instance_id) + 1 :]
        try:
            sealed = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
            payload = self._aead.decrypt(sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], self._aad)
            version, sequence = _PAYLOAD.unpack(payload)
        except (binascii.Error, ValueError, InvalidTag, struct.error):
            raise ValueError("malformed resume token") from None
        if version != _VERSION_SEQUENCE or sequence > _MAX_SEQUENCE:
            raise ValueError("malformed resume token")
        return ResumePoint(instance_id, sequence)
