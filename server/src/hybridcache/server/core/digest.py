"""Digests of a replica, to compare with the Wrapper's (anti-entropy). Pure: no I/O, no clock.

The canonical form and hash are a contract every Wrapper implements the same way
(docs/CONTRACTS-INTERNAL.md, "Digests"); in short, for one tenant and kind with B buckets
(a power of two, 1..4096):

    field(s)        = len(utf8(s)) as 4 bytes big-endian, then utf8(s)
    entity bytes    = field(key) + field(str(version)) + the kind's value fields:
        credit-costs      field(cost as canonical decimal text)
        role-permissions  field(str(n)) + field(p) for each permission, sorted, no duplicates
        user-status       field("1" | "0" active) + field(str(n)) + field(r) per role, in order
        feature-flags     field("1" | "0" enabled) + field(value, "" when null)
    entity hash     = SHA-256(entity bytes)[:16]
    bucket of key   = int.from_bytes(SHA-256(utf8(key))[:8], "big") % B
    bucket digest   = XOR of the entity hashes in the bucket (16 zero bytes when empty)
    top digest      = SHA-256(B as 4 bytes big-endian + every bucket digest in order)[:16]

Digests travel as lowercase hex. XOR makes a bucket independent of item order and cheap to
keep current; keys are unique, so no two equal entity hashes cancel by accident.

`DigestMemo` computes a replica's digest on demand and remembers each key's hash against
the value object it was computed from: the replica replaces a value object on every write,
so an unchanged key costs an identity check, and a full recomputation happens only after a
snapshot install (new objects for every key). Measured by scripts/measure_verify.py.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from hybridcache.server.core.values import CreditCost, FeatureFlag, RolePermissions, UserStatus, Value

ALGORITHM = "sha256-xor-v1"
DEFAULT_BUCKETS = 256
MAX_BUCKETS = 4096
HASH_BYTES = 16
_ZERO = bytes(HASH_BYTES)


def valid_bucket_count(count: int) -> bool:
    return 1 <= count <= MAX_BUCKETS and count & (count - 1) == 0


def _field(text: str) -> bytes:
    raw = text.encode()
    return len(raw).to_bytes(4, "big") + raw


def _flag(value: bool) -> bytes:
    return _field("1" if value else "0")


def _list(items: Iterable[str]) -> bytes:
    listed = list(items)
    return _field(str(len(listed))) + b"".join(_field(item) for item in listed)


def entity_bytes(key: str, value: Value) -> bytes:
    """The canonical bytes of one entity (see the module docstring)."""
    head = _field(key) + _field(str(value.version))
    if isinstance(value, CreditCost):
        return head + _field(value.cost)
    if isinstance(value, RolePermissions):
        return head + _list(sorted(value.permissions, key=str.encode))
    if isinstance(value, UserStatus):
        return head + _flag(value.active) + _list(value.role_ids)
    if isinstance(value, FeatureFlag):
        return head + _flag(value.enabled) + _field(value.value)
    raise TypeError(f"no digest form for {type(value).__name__}")


def entity_hash(key: str, value: Value) -> bytes:
    return hashlib.sha256(entity_bytes(key, value)).digest()[:HASH_BYTES]


def bucket_of(key: str, bucket_count: int) -> int:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % bucket_count


def _xor(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(HASH_BYTES, "big")


def top_digest(buckets: Iterable[bytes], bucket_count: int) -> bytes:
    h = hashlib.sha256(bucket_count.to_bytes(4, "big"))
    for bucket in buckets:
        h.update(bucket)
    return h.digest()[:HASH_BYTES]


@dataclass(frozen=True, slots=True)
class KindDigest:
    """One tenant-kind's digest: `top` and `buckets` as lowercase hex."""

    bucket_count: int
    count: int  # entities digested
    top: str
    buckets: tuple[str, ...]

    def differing(self, other: KindDigest) -> list[int]:
        """Bucket numbers whose digests differ (both must have the same bucket count)."""
        if other.bucket_count != self.bucket_count:
            raise ValueError("digests with different bucket counts cannot be compared")
        return [i for i, (a, b) in enumerate(zip(self.buckets, other.buckets, strict=True)) if a != b]


def digest_of(items: Iterable[tuple[str, Value]], bucket_count: int) -> KindDigest:
    """The digest of (key, value) pairs, computed from scratch (the Wrapper's side, tests)."""
    if not valid_bucket_count(bucket_count):
        raise ValueError(f"bucket count must be a power of two in 1..{MAX_BUCKETS}")
    acc = [0] * bucket_count
    count = 0
    for key, value in items:
        acc[bucket_of(key, bucket_count)] ^= int.from_bytes(entity_hash(key, value), "big")
        count += 1
    return _finish(acc, bucket_count, count)


def _finish(acc: list[int], bucket_count: int, count: int) -> KindDigest:
    raw = [a.to_bytes(HASH_BYTES, "big") for a in acc]
    return KindDigest(bucket_count, count, top_digest(raw, bucket_count).hex(), tuple(r.hex() for r in raw))


class DigestMemo:
    """Computes one tenant-kind's replica digest on demand, reusing each unchanged key's hash.

    Not thread-safe: one owner (the verifier thread)."""

    __slots__ = ("_bucket_count", "_memo")

    def __init__(self, bucket_count: int = DEFAULT_BUCKETS) -> None:
        if not valid_bucket_count(bucket_count):
            raise ValueError(f"bucket count must be a power of two in 1..{MAX_BUCKETS}")
        self._bucket_count = bucket_count
        # key -> (the value object hashed, its bucket, its entity hash as an int)
        self._memo: dict[str, tuple[Value, int, int]] = {}

    @property
    def bucket_count(self) -> int:
        return self._bucket_count

    def compute(self, items: Iterable[tuple[str, Value]]) -> KindDigest:
        """The digest of `items` (a replica's (key, value) pairs, taken by the caller)."""
        old = self._memo
        memo: dict[str, tuple[Value, int, int]] = {}
        acc = [0] * self._bucket_count
        for key, value in items:
            known = old.get(key)
            if known is not None and known[0] is value:
                memo[key] = known
            else:
                known = memo[key] = (
                    value,
                    bucket_of(key, self._bucket_count),
                    int.from_bytes(entity_hash(key, value), "big"),
                )
            acc[known[1]] ^= known[2]
        self._memo = memo  # keys gone from the replica are forgotten here
        return _finish(acc, self._bucket_count, len(memo))

    def keys_in(self, bucket: int) -> list[str]:
        """Keys of the last computation that fall in `bucket`."""
        return [key for key, (_, b, _) in self._memo.items() if b == bucket]
