"""Resume tokens: an opaque, validated encoding of (server instance, sequence).

A token is the URL-safe base64 (unpadded) of ``"<instance_id>:<sequence>"``. Clients must
treat it as opaque; the server decodes it strictly, because it arrives from the network:
anything that is not exactly what `encode_token` produces is a `ValueError`, which the
stream handler answers with INVALID_ARGUMENT.

The instance id is random per process start, so a token from a previous run (or from
another replica behind the same address) is recognisably foreign and answered with
"resync required" instead of being misread as a position in this process's sequence.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

# Instance ids are chosen by us (`secrets.token_hex`) or by configuration; keeping them to
# this alphabet means the ':' separator is unambiguous.
INSTANCE_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_PAYLOAD_RE = re.compile(r"([A-Za-z0-9_-]{1,64}):(0|[1-9][0-9]{0,18})")
_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{1,120}")
MAX_TOKEN_LENGTH = 120  # the longest encode_token can produce, rounded up
_MAX_SEQUENCE = 2**63 - 1  # ChangeEvent.sequence is an int64


@dataclass(frozen=True, slots=True)
class ResumePoint:
    """Where a client wants to resume: after `sequence` of server instance `instance_id`."""

    instance_id: str
    sequence: int


def encode_token(instance_id: str, sequence: int) -> str:
    """The token that resumes after `sequence` of `instance_id`."""
    if not INSTANCE_ID_RE.fullmatch(instance_id):
        raise ValueError("instance id must be 1-64 characters of [A-Za-z0-9_-]")
    if not 0 <= sequence <= _MAX_SEQUENCE:
        raise ValueError("sequence must be a non-negative int64")
    raw = f"{instance_id}:{sequence}".encode("ascii")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_token(token: str) -> ResumePoint:
    """Parse a token from the network. Raises ValueError for anything malformed."""
    if not _TOKEN_RE.fullmatch(token):
        raise ValueError("malformed resume token")
    padded = token + "=" * (-len(token) % 4)
    try:
        raw = base64.b64decode(padded, altchars=b"-_", validate=True).decode("ascii")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise ValueError("malformed resume token") from exc
    match = _PAYLOAD_RE.fullmatch(raw)
    if match is None:
        raise ValueError("malformed resume token")
    point = ResumePoint(match.group(1), int(match.group(2)))
    # Base64 has several spellings of the same bytes (unused low bits); accept only ours,
    # so that one position has exactly one token.
    if point.sequence > _MAX_SEQUENCE or encode_token(point.instance_id, point.sequence) != token:
        raise ValueError("malformed resume token")
    return point
