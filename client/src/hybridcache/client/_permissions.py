"""CheckPermission evaluated locally, with exactly the server's rules.

The server's rules (hybridcache.server.core.permissions), restated: an unknown user is
denied (UNKNOWN_USER), an inactive one too (USER_INACTIVE); otherwise the user's roles are
tried in their order and the first one with a matching grant allows (GRANTED, naming the
role and the grant as written). Within a role the most specific grant wins: the exact
permission, then the longest "prefix.*" whose prefix (dot included) is followed by at least
one character, then "*". No role matching: NO_ROLE_GRANTS. A role the replica does not
hold grants nothing. One JSON file of test vectors (tests/data/permission_vectors.json) and
a property test run this and the server's core side by side, so the two cannot drift.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import NamedTuple

from hybridcache.v1 import hybridcache_pb2 as pb


class LocalDecision(NamedTuple):
    """The answer CheckPermission would give: the same fields as CheckPermissionResponse.
    A NamedTuple: built in ~0.2 µs, a frozen dataclass took ~1 µs of a ~2 µs check."""

    allowed: bool
    reason: pb.PermissionReason.ValueType
    granted_by_role: str = ""
    matched_grant: str = ""


UNKNOWN_USER = LocalDecision(False, pb.PERMISSION_REASON_UNKNOWN_USER)
USER_INACTIVE = LocalDecision(False, pb.PERMISSION_REASON_USER_INACTIVE)
NO_ROLE_GRANTS = LocalDecision(False, pb.PERMISSION_REASON_NO_ROLE_GRANTS)


class CompiledGrants:
    """One role's grants, compiled once when the role is stored."""

    __slots__ = ("_everything", "_exact", "_prefixes")

    def __init__(self, grants: Iterable[str]) -> None:
        exact: set[str] = set()
        prefixes: list[str] = []
        self._everything = False
        for grant in grants:
            if grant == "*":
                self._everything = True
            elif grant.endswith(".*"):
                prefixes.append(grant[:-1])  # "crm.leads.*" -> "crm.leads."
            else:
                exact.add(grant)
        self._exact = frozenset(exact)
        self._prefixes = tuple(sorted(prefixes, key=len, reverse=True))  # most specific first

    def match(self, permission: str) -> str | None:
        """The grant (as written) that allows `permission`, or None."""
        if permission in self._exact:
            return permission
        for prefix in self._prefixes:
            if permission.startswith(prefix) and len(permission) > len(prefix):
                return prefix + "*"
        return "*" if self._everything else None


# A user as a check needs them: (active, role ids in order). A tuple, not the UserStatus
# message: iterating a protobuf repeated field cost more than the rest of the check.
Subject = tuple[bool, tuple[str, ...]]


def subject_of(status: pb.UserStatus) -> Subject:
    return status.active, tuple(status.role_ids)


def decide_locally(
    subject: Subject | None,
    grants_of: Callable[[str], CompiledGrants | None],
    permission: str,
) -> LocalDecision:
    """The decision for `permission` given the user (None: unknown user)."""
    if subject is None:
        return UNKNOWN_USER
    active, role_ids = subject
    if not active:
        return USER_INACTIVE
    for role_id in role_ids:
        grants = grants_of(role_id)
        if grants is not None:
            matched = grants.match(permission)
            if matched is not None:
                return LocalDecision(True, pb.PERMISSION_REASON_GRANTED, role_id, matched)
    return NO_ROLE_GRANTS
