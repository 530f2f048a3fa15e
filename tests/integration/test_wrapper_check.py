"""`hybridcache wrapper-check` against the real development Wrapper over HTTP: it passes on
both Wrapper shapes with their mappings, and each injected fault or shape error fails it
with the line that says what to fix."""

from __future__ import annotations

import copy
import http.server
import json
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from hybridcache.server.cli import main
from hybridcache_dev.harness.wrapper_admin import WrapperAdmin
from hybridcache_dev.wrapper import launch
from tests.conftest import WRAPPER_TOKEN

pytestmark = pytest.mark.timeout(120)

CRM_MAP = Path(__file__).resolve().parents[2] / "docs" / "examples" / "wrapper-map-crm.yaml"
KEYS = ["--key", "user-profiles=user-12", "--key", "org-units=org-sales"]


@pytest.fixture(scope="module")
def wrappers() -> Iterator[dict[str, str]]:
    """Both shapes, without Redis (the check only reads)."""
    with tempfile.TemporaryDirectory(prefix="hybridcache-check-") as tmp:
        started = {
            shape: launch(
                None,
                token=WRAPPER_TOKEN,
                db_path=str(Path(tmp) / f"{shape}.db"),
                extra_args=["--api-shape", shape],
            )
            for shape in ("contract", "crm")
        }
        try:
            yield {shape: process.url for shape, process in started.items()}
        finally:
            for process in started.values():
                process.stop()


@pytest.fixture(scope="module")
def token_file() -> Iterator[str]:
    with tempfile.NamedTemporaryFile("w", suffix=".token", delete=False) as handle:
        handle.write(WRAPPER_TOKEN + "\n")
    yield handle.name
    Path(handle.name).unlink()


def check(
    capsys: pytest.CaptureFixture[str], url: str, token_file: str, *extra: str, tenant: str = "acme"
) -> tuple[int, str]:
    code = main(
        ["wrapper-check", "--url", url, "--token-file", token_file, "--tenant", tenant, *KEYS, *extra]
    )
    return code, capsys.readouterr().out


def crm_map(tmp_path: Path, change: Any) -> str:
    """The crm example mapping with `change(mapping)` applied, as a file."""
    mapping = copy.deepcopy(yaml.safe_load(CRM_MAP.read_text(encoding="utf-8")))
    change(mapping)
    path = tmp_path / "wrapper.yaml"
    path.write_text(yaml.safe_dump(mapping), encoding="utf-8")
    return str(path)


def rows(out: str, status: str) -> list[str]:
    return [line for line in out.splitlines() if f"  {status}  " in line]


@pytest.mark.parametrize("shape", ["contract", "crm"])
def test_passes_against_the_development_wrapper(
    capsys: pytest.CaptureFixture[str], wrappers: dict[str, str], token_file: str, shape: str
) -> None:
    extra = ["--map", str(CRM_MAP)] if shape == "crm" else []
    code, out = check(capsys, wrappers[shape], token_file, *extra)
    assert code == 0, out
    assert "wrapper-check: PASS" in out
    assert not rows(out, "FAIL"), out
    assert not rows(out, "WARN"), out
    listed = [line for line in out.splitlines() if line.startswith("credit-costs") and " list " in line]
    assert len(listed) == 1, out
    assert "20 items" in listed[0], listed
    assert ("4 page(s) (cursor)" if shape == "crm" else "1 page(s) (none)") in listed[0]


def test_a_failing_wrapper_fails_each_endpoint(
    capsys: pytest.CaptureFixture[str], wrappers: dict[str, str], token_file: str
) -> None:
    with WrapperAdmin(wrappers["crm"], WRAPPER_TOKEN) as admin, admin.faults(failStatus=503):
        code, out = check(capsys, wrappers["crm"], token_file, "--map", str(CRM_MAP))
    assert code == 1
    assert "wrapper-check: FAIL" in out
    assert any(
        line.startswith("credit-costs") and "the Wrapper failed (HTTP 503)" in line
        for line in rows(out, "FAIL")
    ), out


def test_a_wrong_token_is_named(
    capsys: pytest.CaptureFixture[str], wrappers: dict[str, str], tmp_path: Path
) -> None:
    wrong = tmp_path / "wrong.token"
    wrong.write_text("not-the-token", encoding="utf-8")
    code, out = check(capsys, wrappers["contract"], str(wrong))
    assert code == 1
    assert "the token was refused (401/403): check --token-file" in out


def test_the_wrong_mapping_for_the_shape_fails_on_the_urls(
    capsys: pytest.CaptureFixture[str], wrappers: dict[str, str], token_file: str
) -> None:
    code, out = check(capsys, wrappers["crm"], token_file)  # the crm shape, the contract's mapping
    assert code == 1
    assert any(
        "snapshots/credit-costs: 404" in line and "the URL template or the tenant is wrong" in line
        for line in rows(out, "FAIL")
    ), out


def test_fields_not_where_the_mapping_says(
    capsys: pytest.CaptureFixture[str], wrappers: dict[str, str], token_file: str, tmp_path: Path
) -> None:
    def misplace(mapping: dict[str, Any]) -> None:
        mapping["kinds"]["credit-costs"]["fields"]["cost"] = "price"  # the Wrapper calls it `credits`

    mapping = crm_map(tmp_path, misplace)
    code, out = check(
        capsys, wrappers["crm"], token_file, "--map", mapping, "--key", "credit-costs=crm.leads.create"
    )
    assert code == 1
    failed = [line for line in rows(out, "FAIL") if line.startswith("credit-costs")]
    assert any(" list " in line and "malformed credit-costs snapshot" in line for line in failed), out
    assert any(" fetch " in line and "check items, fields, item" in line for line in failed), out


def test_paging_that_never_advances(
    capsys: pytest.CaptureFixture[str], wrappers: dict[str, str], token_file: str, tmp_path: Path
) -> None:
    def lose_cursor(mapping: dict[str, Any]) -> None:
        mapping["kinds"]["credit-costs"]["list"]["paging"]["next"] = "paging.cursor"

    code, out = check(capsys, wrappers["crm"], token_file, "--map", crm_map(tmp_path, lose_cursor))
    assert code == 1
    assert any(
        line.startswith("credit-costs") and "a full page of 5 but no next page: check paging.next" in line
        for line in rows(out, "FAIL")
    ), out


def test_an_unknown_tenant_read_as_an_absent_item_is_a_warning(
    capsys: pytest.CaptureFixture[str], wrappers: dict[str, str], token_file: str, tmp_path: Path
) -> None:
    def wrong_code(mapping: dict[str, Any]) -> None:
        mapping["not_found"]["code"] = "error.kind"

    code, out = check(capsys, wrappers["crm"], token_file, "--map", crm_map(tmp_path, wrong_code))
    assert code == 0, out
    assert any(
        "404 tenant" in line and "read as NOT_FOUND, not TENANT_NOT_FOUND" in line
        for line in rows(out, "WARN")
    ), out


def test_an_unknown_tenant_fails_the_lists(
    capsys: pytest.CaptureFixture[str], wrappers: dict[str, str], token_file: str
) -> None:
    code, out = check(capsys, wrappers["contract"], token_file, tenant="nobody")
    assert code == 1
    assert "404 (TENANT_NOT_FOUND): the URL template or the tenant is wrong" in out


def test_a_bad_mapping_file_stops_it_with_exit_2(
    capsys: pytest.CaptureFixture[str], wrappers: dict[str, str], token_file: str, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("kinds:\n  credit-costs:\n    fetch: {url: /api/x}\n", encoding="utf-8")
    url = wrappers["contract"]
    code = main(
        ["wrapper-check", "--url", url, "--token-file", token_file, "--tenant", "acme", "--map", str(bad)]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert (
        err.strip()
        == f"hybridcache wrapper-check: {bad}: credit-costs: fetch.url: needs {{key}} exactly once"
    )


class _Misbehaving(http.server.BaseHTTPRequestHandler):
    """A Wrapper that breaks the contract in the ways the development Wrapper never does:
    each list has lower versions than the one before, every id exists, and a fetched
    entity differs from its listed value."""

    lists = 0

    def do_GET(self) -> None:
        if self.path.startswith("/api/tenants/acme/snapshots/credit-costs"):
            type(self).lists += 1
            version = 10 - type(self).lists
            body: Any = {
                "revision": version,
                "items": [{"operationCode": "a", "cost": "1", "version": version}],
            }
        else:
            body = {"operationCode": "a", "cost": "2", "version": 1}
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *_: object) -> None:
        pass


def test_versions_going_back_and_ids_that_always_exist(
    capsys: pytest.CaptureFixture[str], token_file: str, tmp_path: Path
) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Misbehaving)
    serving = threading.Thread(target=server.serve_forever, daemon=True)
    serving.start()
    mapping = tmp_path / "wrapper.yaml"
    mapping.write_text(
        "kinds:\n  credit-costs:\n"
        "    fetch: {url: '/api/tenants/{tenant}/credit-costs/{key}'}\n"
        "    list: {url: '/api/tenants/{tenant}/snapshots/credit-costs'}\n",
        encoding="utf-8",
    )
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        code = main(
            [
                "wrapper-check",
                "--url",
                url,
                "--token-file",
                token_file,
                "--tenant",
                "acme",
                "--map",
                str(mapping),
            ]
        )
    finally:
        server.shutdown()
        server.server_close()
    out = capsys.readouterr().out
    assert code == 1, out
    failed = rows(out, "FAIL")
    assert any(
        "versions" in line and "went back between two lists (revision 9 -> 8)" in line for line in failed
    ), out
    assert any("fetch" in line and "differs from the list's entity" in line for line in failed), out
    assert any(
        "404 item" in line and "answered 200 for an id that cannot exist" in line for line in failed
    ), out


def test_paging_the_wrapper_ignores(
    capsys: pytest.CaptureFixture[str], wrappers: dict[str, str], token_file: str, tmp_path: Path
) -> None:
    def misname_offset(mapping: dict[str, Any]) -> None:
        mapping["kinds"]["user-status"]["list"]["paging"]["offset_param"] = (
            "skip"  # the Wrapper reads `offset`
        )

    code, out = check(capsys, wrappers["crm"], token_file, "--map", crm_map(tmp_path, misname_offset))
    assert code == 1
    assert any(
        line.startswith("user-status")
        and "page 2 repeats the entities already listed (paging ignored?)" in line
        for line in rows(out, "FAIL")
    ), out
