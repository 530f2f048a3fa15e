"""HMAC-SHA256 signatures on change notifications (optional; on when keys are configured).

The canonical form, chosen so a JavaScript publisher can produce it with string operations
only (no JSON canonicalization library):

1. The publisher serializes the body WITHOUT a signature to a string S
   (`S = JSON.stringify(body)`; any serialization, as long as it ends with `}`).
2. It takes the current time t in epoch milliseconds and computes
   `hex = HMAC-SHA256(key, utf8(t + "." + S))` (lower-case hex).
3. It publishes S with `,"signature":"t=<t>,v1=<hex>"` inserted before S's final `}`:
   `S.slice(0, -1) + ',"signature":"t=' + t + ',v1=' + hex + '"}'`.

The verifier strips exactly that trailing member from the raw bytes (regex
`,"signature":"([^"]*)"}\\Z`) to recover S byte for byte, recomputes the HMAC with each
configured key (rotation: old and new keys both accepted while publishers switch) and
compares in constant time. The timestamp must be within `window_ms` of the verifier's clock
in either direction (replays of old messages fail; skewed clocks within the window pass).
What is then parsed is S, the signed bytes, never the unsigned remainder.

    // JavaScript publisher
    const s = JSON.stringify(body);
    const t = Date.now();
    const hex = crypto.createHmac('sha256', key).update(`${t}.${s}`).digest('hex');
    await redis.publish(channel, s.slice(0, -1) + `,"signature":"t=${t},v1=${hex}"}`);
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Sequence

_TRAILER = re.compile(rb',"signature":"([^"]*)"\}\Z')
_SIGNATURE = re.compile(rb"t=(\d{1,15}),v1=([0-9a-f]{64})")

DEFAULT_WINDOW_MS = 300_000


class SignatureError(ValueError):
    """The message is unsigned, malformed, expired, or signed with no known key."""


def _key_bytes(key: bytes | str) -> bytes:
    return key.encode() if isinstance(key, str) else key


def _mac(key: bytes, t: int, body: bytes) -> str:
    return hmac.new(key, str(t).encode() + b"." + body, hashlib.sha256).hexdigest()


def sign(body_without_signature: str, key: bytes | str, now_ms: int) -> str:
    """Return the message to publish: the body with its signature member appended."""
    body = body_without_signature
    if not (body.startswith("{") and body.endswith("}")) or body[:-1].rstrip().endswith("{"):
        raise ValueError("the body must be a non-empty JSON object with no surrounding whitespace")
    mac = _mac(_key_bytes(key), now_ms, body.encode())
    return f'{body[:-1]},"signature":"t={now_ms},v1={mac}"}}'


def verify(raw: bytes, keys: Sequence[bytes], now_ms: int, window_ms: int = DEFAULT_WINDOW_MS) -> bytes:
    """Check a signed message; return the signed body S (bytes). Raises SignatureError."""
    trailer = _TRAILER.search(raw)
    if trailer is None:
        raise SignatureError("no signature")
    fields = _SIGNATURE.fullmatch(trailer.group(1))
    if fields is None:
        raise SignatureError("malformed signature")
    t = int(fields.group(1))
    if abs(now_ms - t) > window_ms:
        raise SignatureError("signature timestamp outside the window")
    body = raw[: trailer.start()] + b"}"
    given = fields.group(2).decode()
    # Compare against every key (no early exit) so timing does not reveal which key matched.
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(_mac(key, t, body), given)
    if not matched:
        raise SignatureError("signature matches no key")
    return body
