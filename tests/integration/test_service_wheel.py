"""The service wheel (hybridcache-server) holds the service and nothing else: no development
Wrapper, no benchmark, no dev stack; those ship in hybridcache-devtools (devtools/), whose
wheel in turn holds none of the service."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICE = "hybridcache/server/"
TOOLING = ("devwrapper", "bench", "devstack", "lifeline", "redis_process", "hybridcache_dev")


def build_wheel(project: Path, out: Path) -> list[str]:
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", str(project), "-o", str(out)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = out.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        return archive.namelist()


@pytest.fixture(scope="module")
def service_wheel(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    return build_wheel(ROOT, tmp_path_factory.mktemp("service-dist"))


@pytest.mark.timeout(300)
def test_the_service_wheel_holds_only_the_service(service_wheel: list[str]) -> None:
    code = [name for name in service_wheel if ".dist-info/" not in name]
    outside = [name for name in code if not name.startswith(SERVICE)]
    assert not outside, f"the service wheel holds files outside {SERVICE}: {outside}"
    tooling = [name for name in code if any(part in name for part in TOOLING)]
    assert not tooling, f"the service wheel holds tooling: {tooling}"
    # Every service module is in it (a wheel that lost the service would pass the above).
    in_tree = {
        str(path.relative_to(ROOT / "server" / "src"))
        for path in (ROOT / "server" / "src" / "hybridcache" / "server").rglob("*.py")
        if "__pycache__" not in path.parts
    }
    assert in_tree <= set(code), f"service modules missing from the wheel: {sorted(in_tree - set(code))}"


@pytest.mark.timeout(300)
def test_the_devtools_wheel_holds_only_the_tooling(tmp_path: Path) -> None:
    names = build_wheel(ROOT / "devtools", tmp_path)
    code = [name for name in names if ".dist-info/" not in name]
    assert code, "the devtools wheel is empty"
    outside = [name for name in code if not name.startswith("hybridcache_dev/")]
    assert not outside, f"the devtools wheel holds files outside hybridcache_dev/: {outside}"
    assert any(name.endswith(".dist-info/entry_points.txt") for name in names), (
        "the devtools wheel declares no entry points (hybridcache dev / bench)"
    )
