"""docs/ARCHITECTURE.md's tree matches the repository: every path it names exists, and every
package directory (and every module of the service package) is named, so the tree a newcomer
reads is the tree they will find."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVICE = "server/src/hybridcache/server/"


def _tracked() -> set[str]:
    """The files git knows of, and new ones it does not ignore (a change not yet committed)."""
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    return {line for line in out.splitlines() if (ROOT / line).exists()}


def _tree_block() -> list[str]:
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    section = text[text.index("## The parts") :]
    match = re.search(r"```\n(.*?)```", section, re.DOTALL)
    assert match, "docs/ARCHITECTURE.md: no tree (a ``` block) under '## The parts'"
    return match.group(1).splitlines()


def named_paths() -> list[str]:
    """Paths the tree names: an unindented first word is a path from the root (a directory
    there is the parent of the lines indented by two below it); a two-space-indented first
    column names entries of that parent ("a.py, b.py" names two). Deeper lines continue a
    description; lines starting with # are group headings."""
    paths: list[str] = []
    parent = ""
    for line in _tree_block():
        if not line.strip() or line.strip().startswith("#"):
            continue
        if not line.startswith(" "):
            first = line.split()[0]
            paths.append(first)
            parent = first if first.endswith("/") else ""
        elif line.startswith("  ") and not line.startswith("   ") and parent:
            column = re.split(r"\s{2,}", line.strip())[0]
            paths.extend(parent + name.strip() for name in column.split(","))
    return paths


def test_every_path_the_tree_names_exists() -> None:
    files = _tracked()
    missing = [
        path
        for path in named_paths()
        if path not in files and not any(f.startswith(path.rstrip("/") + "/") for f in files)
    ]
    assert not missing, f"docs/ARCHITECTURE.md names paths that git does not have: {missing}"


def test_every_package_directory_is_named() -> None:
    named = {path.rstrip("/") for path in named_paths()}
    packages = sorted(
        str(Path(f).parent) for f in _tracked() if f.endswith("/__init__.py") and not f.startswith("tests/")
    )
    unnamed = [package for package in packages if package not in named]
    assert not unnamed, f"docs/ARCHITECTURE.md's tree leaves out these packages: {unnamed}"


def test_every_service_module_is_named() -> None:
    named = {path.rstrip("/") for path in named_paths()}
    modules = sorted(
        f
        for f in _tracked()
        if f.startswith(SERVICE) and f.count("/") == SERVICE.count("/") and f.endswith(".py")
    )
    unnamed = [m for m in modules if m not in named and not m.endswith("/__init__.py")]
    assert not unnamed, f"docs/ARCHITECTURE.md's tree leaves out these service modules: {unnamed}"


def test_the_reader_finds_what_it_names() -> None:
    # The parser itself: a named module, a named package, a distribution root.
    paths = named_paths()
    assert f"{SERVICE}api/gate.py" in paths
    assert f"{SERVICE}core/" in paths
    assert "devtools/src/hybridcache_dev/wrapper/" in paths
