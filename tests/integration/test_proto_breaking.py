"""`buf breaking` against the released contract (protos-baseline/) catches what breaks
existing clients and lets additive changes through. Runs the real buf on copies."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUF = ROOT / ".venv" / "bin" / "buf"  # buf-bin, installed by scripts/bootstrap (as scripts/buf uses it)
PROTO = Path("hybridcache") / "v1" / "hybridcache.proto"

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(not BUF.exists(), reason="buf is installed by scripts/bootstrap"),
]


def _breaking(tmp_path: Path, edit: tuple[str, str] | None) -> subprocess.CompletedProcess[str]:
    module = tmp_path / "protos"
    shutil.copytree(ROOT / "protos", module)
    if edit is not None:
        text = (module / PROTO).read_text()
        old, new = edit
        assert old in text, f"the proto no longer contains {old!r}: update this test"
        (module / PROTO).write_text(text.replace(old, new, 1))
    return subprocess.run(
        [str(BUF), "breaking", "--against", str(ROOT / "protos-baseline")],
        cwd=module,
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )


def test_the_current_contract_does_not_break_the_released_one(tmp_path: Path) -> None:
    result = _breaking(tmp_path, None)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(
            ("  SOURCE_CACHE = 1;\n", "  SOURCE_CACHE = 1;\n  SOURCE_LATER = 90;\n"), id="new-enum-value"
        ),
        pytest.param(
            ("message Provenance {\n", "message Provenance {\n  string added_later = 90;\n"), id="new-field"
        ),
    ],
)
def test_additive_changes_pass(tmp_path: Path, edit: tuple[str, str]) -> None:
    result = _breaking(tmp_path, edit)
    assert result.returncode == 0, f"an additive change was refused: {result.stdout}{result.stderr}"


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(("  SOURCE_CACHE = 1;\n", ""), id="enum-value-removed"),
        pytest.param(("SOURCE_CACHE = 1", "SOURCE_CACHED = 1"), id="enum-value-renamed"),
        pytest.param(("rpc GetCreditCost(", "rpc GetCreditCostRenamed("), id="rpc-renamed"),
    ],
)
def test_breaking_changes_fail(tmp_path: Path, edit: tuple[str, str]) -> None:
    result = _breaking(tmp_path, edit)
    assert result.returncode != 0, "buf breaking let a breaking change through"
    assert result.stdout.strip(), "buf breaking failed without saying why"
