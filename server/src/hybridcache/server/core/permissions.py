"""CheckPermission as a pure function of a user's status and their roles' grants.

A grant is one of
    "*"            everything
    "crm.leads.*"  every permission under "crm.leads." (not "crm.leads" itself, not "crm.leadsx")
    anything else  exactly that permission
A role's grants are compiled once, when the role is stored, into a frozenset of exact grants
and a tuple of prefixes, so a check is a set lookup and one `str.startswith(tuple)`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum

from hybridcache.server.core.values import UserStatus


class PermissionReason(StrEnum):
    GRANTED = "granted"
    USER_INACTIVE = "user-inactive"
    UNKNOWN_USER = "unknown-user"
    NO_ROLE_GRANTS = "no-role-grants"


@dataclass(frozen=True, slots=True)
class PermissionDecision:
    allowed: bool
    reason: PermissionReason
    role_id: str  # the granting role ("" unless GRANTED)
    matched_grant: str  # the grant that matched, as written in the role ("" unless GRANTED)
    age_s: float  # age of the user-status entry the decision rests on
    version: int  # the user-status entity's version


class Grants:
    """One role's grants, compiled for matching."""

    __slots__ = ("_everything", "_exact", "_prefixes")

    def __init__(self, grants: Iterable[str]) -> None:
        exact: set[str] = set()
        prefixes: list[str] = []
        self._everything = False
        for grant in grants:
            if grant == "*":
                self._everything = True
            elif grant.endswith(".*"):
                prefixes.append(grant[:-1])  # keep the dot: "crm.leads.*" -> "crm.leads."
            else:
                exact.add(grant)
        self._exact = frozenset(exact)
        # Longest first, so the reported grant is the most specific one that matched.
        self._prefixes = tuple(sorted(prefixes, key=len, reverse=True))

    def match(self, permission: str) -> str | None:
        """The grant (as written) that allows `permission`, or None. Most specific wins."""
        if permission in self._exact:
            return permission
        if self._prefixes and permission.startswith(self._prefixes):
            for prefix in self._prefixes:
                # A prefix must be followed by at least one character: "crm.leads." grants nothing.
                if permission.startswith(prefix) and len(permission) > len(prefix):
                    return prefix + "*"
        return "*" if self._everything else None


def decide(
    status: UserStatus | None,
    grants_of: Callable[[str], Grants | None],
    permission: str,
    age_s: float,
) -> PermissionDecision:
    """The decision for `permission`. `status` None: the user is unknown. `grants_of(role_id)`
    is None for a role the replica does not hold: such a role grants nothing."""
    if status is None:
        return PermissionDecision(False, PermissionReason.UNKNOWN_USER, "", "", 0.0, 0)
    if not status.active:
        return PermissionDecision(False, PermissionReason.USER_INACTIVE, "", "", age_s, status.version)
    for role_id in status.role_ids:
        grants = grants_of(role_id)
        if grants is not None:
            matched = grants.match(permission)
            if matched is not None:
                return PermissionDecision(
                    True, PermissionReason.GRANTED, role_id, matched, age_s, status.version
                )
    return PermissionDecision(False, PermissionReason.NO_ROLE_GRANTS, "", "", age_s, status.version)
