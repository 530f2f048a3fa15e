"""Quick checks of what the image is built and deployed from (the default run; building and
running the image itself is `make image-test`, tests/image/test_image.py)."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml

from hybridcache.server.cli import main
from hybridcache.server.config import Settings

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def image_tag() -> str:
    """The one tag: the server distribution's name and version."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return f"{project['name']}:{project['version']}"


def dockerfile_instructions() -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    joined = re.sub(
        r"\\\n", " ", "\n".join(line for line in DOCKERFILE.splitlines() if not line.startswith("#"))
    )
    return [line.strip() for line in joined.splitlines() if line.strip()]


def test_the_project_is_installed_from_its_wheels_by_path_never_by_name() -> None:
    installs = [
        command
        for line in dockerfile_instructions()
        if line.startswith("RUN")
        for command in line.removeprefix("RUN").split("&&")
        if "pip install" in command
    ]
    assert installs, "no pip install in the Dockerfile"
    for command in installs:
        words = shlex.split(command)
        names = [w for w in words[words.index("install") + 1 :] if not w.startswith("-")]
        assert "--find-links" not in words, f"an index search for the project's names: {command}"
        for name in names:
            # A path into /wheels, or a third-party tool pinned to one version.
            assert name.startswith("/wheels/") or re.fullmatch(r"[\w.-]+==[\w.]+", name), (
                f"`{name}` is installed by an unpinned name: {command}"
            )
    assert any("/wheels/hybridcache_server-" in c for c in installs)


def test_every_stage_builds_from_the_base_argument_pinned_by_digest() -> None:
    lines = dockerfile_instructions()
    default = next(line for line in lines if line.startswith("ARG BASE_IMAGE="))
    assert re.fullmatch(r"ARG BASE_IMAGE=[\w./:-]+@sha256:[0-9a-f]{64}", default), default
    froms = [line for line in lines if line.startswith("FROM")]
    assert froms
    assert all(line.split()[1] == "${BASE_IMAGE}" for line in froms), froms


def test_one_image_tag_in_readme_makefile_and_deployment() -> None:
    tag = image_tag()
    pattern = re.compile(r"(?<![/\w-])hybridcache(?:-server)?:[\w.]+")  # not a dns:/// target
    for name in ("README.md", "Makefile", "deploy/deployment.yaml"):
        found = set(pattern.findall((ROOT / name).read_text()))
        assert found, f"{name} names no image"
        assert found <= {tag}, f"{name} names {found}, not {tag}"
    deployment = yaml.safe_load((ROOT / "deploy/deployment.yaml").read_text())
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == tag


def test_stop_timeouts_outlast_the_drain_and_the_grace() -> None:
    settings = Settings.model_validate({})
    config = yaml.safe_load((ROOT / "deploy/configmap.yaml").read_text())["data"]
    drain = float(config.get("HYBRIDCACHE_DRAIN_S", settings.drain_s))
    grace = float(config.get("HYBRIDCACHE_GRACE_S", settings.grace_s))
    pod = yaml.safe_load((ROOT / "deploy/deployment.yaml").read_text())["spec"]["template"]["spec"]
    pre_stop = pod["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + drain + grace
    assert "STOPSIGNAL SIGTERM" in DOCKERFILE
    readme = (ROOT / "README.md").read_text()
    stop_timeouts = [int(n) for n in re.findall(r"(?:docker stop -t|--stop-timeout) (\d+)", readme)]
    assert stop_timeouts, "the README gives no stop timeout"
    assert min(stop_timeouts) >= settings.drain_s + settings.grace_s


def test_version_is_read_from_the_renamed_distribution(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert capsys.readouterr().out.strip() == f"hybridcache {version}"
