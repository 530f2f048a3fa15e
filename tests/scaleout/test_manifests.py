"""deploy/ passes scripts/check_manifests.py, and the check does catch what it claims to."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(60)


def _checker() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_manifests", ROOT / "scripts" / "check_manifests.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["check_manifests"] = module
    spec.loader.exec_module(module)
    return module


def test_the_shipped_manifests_pass(capsys: pytest.CaptureFixture[str]) -> None:
    assert _checker().main([]) == 0, capsys.readouterr().err


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("revisionHistoryLimit: 5", "revisionHistoryLimt: 5", "revisionHistoryLimt"),  # schema, strict
        ("      maxSurge: 1", "      maxSurge: true", "maxSurge"),  # schema: wrong type
        (
            "          readinessProbe:\n            grpc:\n              port: 8086",
            "          readinessProbe:\n            tcpSocket:\n              port: 8086",
            "readinessProbe must be a grpc probe",
        ),
        ("            allowPrivilegeEscalation: false\n", "", "allowPrivilegeEscalation"),
        ("              memory: 512Mi\n", "              cpu: '2'\n", "must limit memory"),
    ],
)
def test_the_check_catches(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], old: str, new: str, expected: str
) -> None:
    for path in (ROOT / "deploy").glob("*.yaml"):
        shutil.copy(path, tmp_path / path.name)
    deployment = tmp_path / "deployment.yaml"
    text = deployment.read_text()
    assert old in text
    deployment.write_text(text.replace(old, new, 1))
    assert _checker().main([str(tmp_path)]) == 1
    assert expected in capsys.readouterr().err


def test_a_misspelt_setting_is_caught(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for path in (ROOT / "deploy").glob("*.yaml"):
        shutil.copy(path, tmp_path / path.name)
    config = tmp_path / "configmap.yaml"
    config.write_text(config.read_text().replace("HYBRIDCACHE_RESYNC_JITTER_S", "HYBRIDCACHE_RESYNC_JITTER"))
    assert _checker().main([str(tmp_path)]) == 1
    assert "HYBRIDCACHE_RESYNC_JITTER is not a setting" in capsys.readouterr().err
