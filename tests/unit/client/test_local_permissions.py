"""The client's local CheckPermission against the server's core: one set of JSON vectors
run through both, and a property test on random roles, grants, users and permissions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hybridcache.client._permissions import CompiledGrants, decide_locally, subject_of
from hybridcache.server.core.permissions import Grants, decide
from hybridcache.server.core.values import UserStatus
from hybridcache.v1 import hybridcache_pb2 as pb

VECTORS = json.loads((Path(__file__).parents[2] / "data" / "permission_vectors.json").read_text())
Answer = tuple[bool, str, str, str]  # allowed, reason (enum name without the prefix), role, grant


def core_answer(
    roles: dict[str, list[str]], user: dict[str, Any] | None, user_id: str, permission: str
) -> Answer:
    compiled = {role_id: Grants(grants) for role_id, grants in roles.items()}
    status = None if user is None else UserStatus(user_id, user["active"], tuple(user["roles"]))
    decision = decide(status, compiled.get, permission, 0.0)
    return decision.allowed, decision.reason.name, decision.role_id, decision.matched_grant


def client_answer(
    roles: dict[str, list[str]], user: dict[str, Any] | None, user_id: str, permission: str
) -> Answer:
    compiled = {role_id: CompiledGrants(grants) for role_id, grants in roles.items()}
    status = (
        None
        if user is None
        else pb.UserStatus(user_id=user_id, active=user["active"], role_ids=user["roles"])
    )
    decision = decide_locally(None if status is None else subject_of(status), compiled.get, permission)
    reason = pb.PermissionReason.Name(decision.reason).removeprefix("PERMISSION_REASON_")
    return decision.allowed, reason, decision.granted_by_role, decision.matched_grant


@pytest.mark.parametrize("case", VECTORS["cases"], ids=lambda c: f"{c['user']}:{c['permission']}")
@pytest.mark.parametrize("evaluate", [core_answer, client_answer], ids=["server-core", "client"])
def test_the_shared_vectors(case: dict[str, Any], evaluate: Any) -> None:
    user = VECTORS["users"].get(case["user"])
    expected = (case["allowed"], case["reason"], case["role"], case["grant"])
    assert evaluate(VECTORS["roles"], user, case["user"], case["permission"]) == expected


_SEGMENT = st.sampled_from(["crm", "leads", "read", "a", "b", ""])
_DOTTED = st.lists(_SEGMENT, min_size=1, max_size=4).map(".".join)
_GRANT = st.one_of(_DOTTED, _DOTTED.map(lambda p: p + ".*"), st.just("*"), st.just(".*"))
_ROLES = st.dictionaries(st.sampled_from(["r1", "r2", "r3", "r4"]), st.lists(_GRANT, max_size=5), max_size=4)
_USER = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {
            "active": st.booleans(),
            "roles": st.lists(st.sampled_from(["r1", "r2", "r3", "r4", "gone"]), max_size=4),
        }
    ),
)


@settings(max_examples=500, deadline=None)
@given(roles=_ROLES, user=_USER, permission=_DOTTED)
def test_the_client_decides_as_the_server_core_on_random_roles(
    roles: dict[str, list[str]], user: dict[str, Any] | None, permission: str
) -> None:
    assert client_answer(roles, user, "u", permission) == core_answer(roles, user, "u", permission)
