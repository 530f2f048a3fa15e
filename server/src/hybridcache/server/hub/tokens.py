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

The sealed payload is versioned (its first byte). Version 1 is the above. Version 2 is a
*fleet* token, for durable mode (events read from one Redis stream): ``"fleet-<key id>.<sealed>"``,
sealed under a key every replica shares (HYBRIDCACHE_RESUME_TOKEN_KEY), the key id in clear
(a digest of the key, so replicas with another key are told apart from unknown instances),
and the payload carries the issuing instance (a digest of its id), its sequence, and the
*stream position*: the id of the last Redis stream entry whose changes the token covers.
The issuing instance resumes by its sequence, exactly as with version 1; any other replica
of the fleet resumes by the stream position, which every replica reading that stream shares.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import secrets
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

# Instance ids are chosen by us (`secrets.token_hex`) or by configuration; keeping them to
# this alphabet means the '.' separator is unambiguous.
INSTANCE_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_TOKEN_RE = re.compile(r"([A-Za-z0-9_-]{1,64})\.([A-Za-z0-9_-]{1,120})")
MAX_TOKEN_LENGTH = 200  # the longest a token can be (64 + 1 + 120), rounded up
_MAX_SEQUENCE = 2**63 - 1
_NONCE_BYTES = 12
_PAYLOAD = struct.Struct(">BQ")  # version, sequence
_FLEET_PAYLOAD = struct.Struct(">BQ8sQQ")  # version, sequence, instance digest, stream id (ms, seq)
_VERSION_SEQUENCE = 1
_VERSION_FLEET = 2
FLEET_PREFIX = "fleet-"
FLEET_KEY_BYTES = (16, 24, 32)  # AES-128/192/256

StreamPosition = tuple[int, int]
"""A Redis stream entry id as (milliseconds, sequence): ordered like the ids themselves."""


@dataclass(frozen=True, slots=True)
class ResumePoint:
    """Where a client wants to resume: after `sequence` of server instance `instance_id`
    (None: a token of another instance, whose position this one cannot read)."""

    instance_id: str
    sequence: int | None
    # A fleet token's stream position (None: not a fleet token, or not one of our fleet).
    position: StreamPosition | None = None
    # A fleet token of this key issued by another instance (or an earlier run of this one):
    # `sequence` is then None and `position` says where to resume.
    other_instance: bool = False
    # The token names a fleet key other than ours.
    other_key: bool = False


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


def fleet_key_id(key: bytes) -> str:
    """What a fleet token shows in clear: ``fleet-`` and 12 hex digits of a digest of the key
    (one-way: the id says which key, never the key)."""
    digest = hashlib.sha256(b"hybridcache resume token key id\0" + key).hexdigest()
    return FLEET_PREFIX + digest[:12]


def parse_fleet_key(encoded: str) -> bytes:
    """The shared key from its setting (standard or URL-safe base64 of 16, 24 or 32 bytes)."""
    text = encoded.strip()
    try:
        standard = text.replace("-", "+").replace("_", "/")
        key = base64.b64decode(standard + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the resume token key must be base64") from None
    if len(key) not in FLEET_KEY_BYTES:
        raise ValueError(f"the resume token key must be 16, 24 or 32 bytes (got {len(key)})")
    return key


class FleetSealer:
    """Seals and opens fleet tokens (version 2) under a key shared by every replica.

    Thread-safe. `seal` needs the stream position the token covers; `open` tells this
    instance's own tokens (resumed by sequence) from the fleet's (resumed by position)."""

    def __init__(self, instance_id: str, key: bytes) -> None:
        if not INSTANCE_ID_RE.fullmatch(instance_id):
            raise ValueError("instance id must be 1-64 characters of [A-Za-z0-9_-]")
        if len(key) not in FLEET_KEY_BYTES:
            raise ValueError("the resume token key must be 16, 24 or 32 bytes")
        self.instance_id = instance_id
        self.key_id = fleet_key_id(key)
        self._aad = self.key_id.encode("ascii")
        self._instance_digest = hashlib.sha256(instance_id.encode("ascii")).digest()[:8]
        self._aead = AESGCM(key)

    def seal(self, sequence: int, position: StreamPosition) -> str:
        if not 0 <= sequence <= _MAX_SEQUENCE:
            raise ValueError("sequence must be a non-negative int64")
        payload = _FLEET_PAYLOAD.pack(_VERSION_FLEET, sequence, self._instance_digest, *position)
        nonce = secrets.token_bytes(_NONCE_BYTES)
        sealed = nonce + self._aead.encrypt(nonce, payload, self._aad)
        return f"{self.key_id}.{base64.urlsafe_b64encode(sealed).rstrip(b'=').decode('ascii')}"

    def open(self, token: str) -> ResumePoint:
        prefix = instance_of(token)
        if prefix != self.key_id:
            if prefix.startswith(FLEET_PREFIX):
                return ResumePoint(prefix, None, other_key=True)
            return ResumePoint(prefix, None)  # a per-process token (pub/sub, or before the key)
        encoded = token[len(prefix) + 1 :]
        try:
            sealed = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
            payload = self._aead.decrypt(sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], self._aad)
            version, sequence, instance, ms, seq = _FLEET_PAYLOAD.unpack(payload)
        except (binascii.Error, ValueError, InvalidTag, struct.error):
            raise ValueError("malformed resume token") from None
        if version != _VERSION_FLEET or sequence > _MAX_SEQUENCE:
            raise ValueError("malformed resume token")
        if instance == self._instance_digest:
            return ResumePoint(self.instance_id, sequence, (ms, seq))
        return ResumePoint(prefix, None, (ms, seq), other_instance=True)
