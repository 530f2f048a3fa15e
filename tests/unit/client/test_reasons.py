"""The one table of error reasons: well-formed, exported, listed in the README, and the only
source of the reasons (and their status codes) the server sends."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2

import hybridcache.client
from hybridcache.client import ClientConfig, Reason, errors
from hybridcache.client._config import service_config
from hybridcache.client.reasons import ERROR_DOMAIN
from hybridcache.server.api.errors import status_code_for
from hybridcache.server.core.errors import CacheError, InvalidRequest, NotFound, WrapperUnavailable
from tests.unit.client.test_client_errors import FakeRpcError, _rich_trailers

ROOT = Path(__file__).resolve().parents[3]
SERVER = ROOT / "server" / "src" / "hybridcache" / "server"


def test_each_reason_is_its_own_name_upper_snake_with_a_code_and_a_meaning() -> None:
    assert len(Reason) >= 25
    for reason in Reason:
        assert reason.value == reason.name, f"{reason.name}: the wire text must be the member's name"
        assert re.fullmatch(r"[A-Z][A-Z0-9_]*", reason.value), reason.value
        assert isinstance(reason.code, grpc.StatusCode), reason.name
        assert reason.code is not grpc.StatusCode.OK, reason.name
        assert reason.meaning.endswith("."), f"{reason.name}: say what it means in a sentence"


def test_reasons_are_strings_on_the_wire_and_parse_back() -> None:
    assert Reason.TOO_MANY_STREAMS == "TOO_MANY_STREAMS"
    assert json.dumps(Reason.WRAPPER_REJECTED) == '"WRAPPER_REJECTED"'
    assert Reason.parse("WRAPPER_BUSY") is Reason.WRAPPER_BUSY
    assert Reason.parse("A_REASON_OF_A_NEWER_SERVER") is None
    assert Reason.parse("") is None


def test_the_client_exports_the_table() -> None:
    assert hybridcache.client.Reason is Reason
    assert hybridcache.client.ERROR_DOMAIN == ERROR_DOMAIN == "hybridcache.dev"


def test_readme_lists_every_reason_from_the_table() -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from reason_table import reason_table
    finally:
        sys.path.pop(0)
    table = reason_table()
    readme = (ROOT / "README.md").read_text()
    assert table in readme, "README's reason table is stale: run scripts/reason_table.py --write"
    for reason in Reason:
        assert f"| `{reason.value}` | {reason.code.name} |" in table


def test_a_wrapper_credentials_fault_is_not_unavailable_so_the_client_never_retries_it() -> None:
    assert Reason.WRAPPER_REJECTED.code is grpc.StatusCode.INTERNAL
    retried = {
        code
        for method in service_config(ClientConfig(), multi_address=False)["methodConfig"]
        for code in method["retryPolicy"]["retryableStatusCodes"]
    }
    assert retried == {"UNAVAILABLE"}
    assert Reason.WRAPPER_REJECTED.code.name not in retried
    # Every UNAVAILABLE reason is one a retry may mend: Wrapper trouble, or a server going away.
    unavailable = {r for r in Reason if r.code is grpc.StatusCode.UNAVAILABLE}
    assert unavailable == {r for r in Reason if r.name.startswith("WRAPPER_")} - {Reason.WRAPPER_REJECTED} | {
        Reason.SHUTTING_DOWN
    }


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (InvalidRequest("x"), grpc.StatusCode.INVALID_ARGUMENT),
        (InvalidRequest("x", reason=Reason.FIELD_TOO_LONG), grpc.StatusCode.INVALID_ARGUMENT),
        (NotFound("x", reason=Reason.TENANT_NOT_FOUND), grpc.StatusCode.NOT_FOUND),
        (WrapperUnavailable("x"), grpc.StatusCode.UNAVAILABLE),
        (WrapperUnavailable("x", reason=Reason.WRAPPER_TIMEOUT), grpc.StatusCode.UNAVAILABLE),
        (WrapperUnavailable("x", reason=Reason.WRAPPER_REJECTED), grpc.StatusCode.INTERNAL),
        (CacheError("x"), grpc.StatusCode.INTERNAL),
    ],
)
def test_the_server_takes_each_domain_errors_code_from_its_reason(
    error: CacheError, code: grpc.StatusCode
) -> None:
    assert status_code_for(error) is code


def test_an_unknown_reason_text_fails_where_it_is_raised() -> None:
    with pytest.raises(KeyError):
        NotFound("x", reason="NO_SUCH_REASON")  # type: ignore[arg-type]


def test_no_reason_is_written_as_a_literal_in_the_server() -> None:
    # mypy holds every reason to the `Reason` type; this catches what it cannot see (an
    # `Any`, a test double) and the old call shapes.
    offenders = []
    for path in sorted(SERVER.rglob("*.py")):
        if {"bench", "devwrapper"} & set(path.relative_to(SERVER).parts):
            continue  # tools, not the service's errors
        text = path.read_text()
        for pattern in (
            r'reason="[A-Z_]+"',
            r"abort\(\s*context,\s*grpc\.StatusCode",
            r'[A-Z_]*REASONS?\b[^=\n]*= (frozenset\(\s*\{)?\s*"[A-Z_]+"',
        ):
            offenders += [f"{path.relative_to(ROOT)}: {m.group(0)}" for m in re.finditer(pattern, text)]
    assert offenders == [], "reasons must come from hybridcache.client.reasons.Reason"


def test_the_client_hands_out_known_reasons_as_members_and_others_as_text() -> None:
    info = error_details_pb2.ErrorInfo(reason="WRAPPER_REJECTED", domain=ERROR_DOMAIN)
    mapped = errors.from_rpc_error(
        FakeRpcError(grpc.StatusCode.INTERNAL, "refused", _rich_trailers(13, info))
    )
    assert isinstance(mapped, errors.Internal)
    assert mapped.reason is Reason.WRAPPER_REJECTED
    assert str(mapped).startswith("INTERNAL [WRAPPER_REJECTED]: ")
    newer = error_details_pb2.ErrorInfo(reason="SOMETHING_NEW", domain=ERROR_DOMAIN)
    mapped = errors.from_rpc_error(FakeRpcError(grpc.StatusCode.INTERNAL, "new", _rich_trailers(13, newer)))
    assert mapped.reason == "SOMETHING_NEW"
    assert not isinstance(mapped.reason, Reason)
