"""Regenerate the Python code for protos/ into the client package (the one copy of it).

    python scripts/gen_protos.py          # write client/src/hybridcache/v1/*
    python scripts/gen_protos.py --check  # fail if the committed output differs

The generator versions are pinned: grpcio-tools in scripts/generator.txt (installed by
scripts/bootstrap into .venv/generator, apart from the dev tools, because it is older than
their protobuf allows: its protoc decides the protobuf and grpcio floors of the client wheel),
mypy-protobuf in the root pyproject (extra "dev"; its plugins run from the venv). Different
versions emit different code, so the check refuses to run with others rather than report a
false drift.
"""

from __future__ import annotations

import argparse
import filecmp
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
OUT_ROOT = ROOT / "client" / "src"
PACKAGE_DIR = Path("hybridcache") / "v1"
BIN = Path(sys.executable).parent  # the venv's bin: mypy-protobuf's plugins live there
GENERATOR_DIR = ROOT / ".venv" / "generator"  # grpcio-tools and its protobuf (scripts/bootstrap)
GENERATOR_PINS = ROOT / "scripts" / "generator.txt"
PINNED_IN_VENV = {"mypy-protobuf": "5.1.0"}


def _pins(path: Path) -> dict[str, str]:
    pins: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[name] = version
    return pins


def check_generator_versions() -> None:
    wanted_generator = _pins(GENERATOR_PINS)
    found_generator = {
        dist.metadata["Name"].lower(): dist.version
        for dist in importlib.metadata.distributions(path=[str(GENERATOR_DIR)])
    }
    for dist, wanted in wanted_generator.items():
        found = found_generator.get(dist)
        if found != wanted:
            sys.exit(f"gen_protos: {dist} {found} in .venv/generator, {wanted} pinned; run `make install`")
    for dist, wanted in PINNED_IN_VENV.items():
        found = importlib.metadata.version(dist)
        if found != wanted:
            sys.exit(f"gen_protos: {dist} {found} installed, {wanted} pinned; run `make install`")


# protoc runs in a child whose imports come from .venv/generator first (its grpcio-tools,
# protobuf and grpcio shadow the venv's); the mypy plugins run from the venv.
_PROTOC = """
import os, sys
from pathlib import Path
from grpc_tools import protoc
os.environ.pop("PYTHONPATH")  # the plugins protoc starts run on the venv's own packages
well_known = Path(protoc.__file__).parent / "_proto"
sys.exit(protoc.main(["protoc", f"-I{well_known}", *sys.argv[1:]]))
"""


def generate(out_root: Path) -> None:
    sources = sorted(str(p.relative_to(PROTOS)) for p in (PROTOS / PACKAGE_DIR).glob("*.proto"))
    args = [
        f"-I{PROTOS}",
        f"--python_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"--plugin=protoc-gen-mypy={BIN / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={BIN / 'protoc-gen-mypy_grpc'}",
        f"--mypy_out={out_root}",
        f"--mypy_grpc_out={out_root}",
        *sources,
    ]
    env = {**os.environ, "PYTHONPATH": str(GENERATOR_DIR)}
    if subprocess.run([sys.executable, "-c", _PROTOC, *args], env=env, check=False).returncode != 0:
        sys.exit("gen_protos: protoc failed")
    package = out_root / PACKAGE_DIR
    (package / "__init__.py").write_text(
        '"""Generated from protos/hybridcache/v1 by scripts/gen_protos.py. Do not edit."""\n'
    )
    (package / "py.typed").write_text("")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the committed code is out of date")
    args = parser.parse_args()
    check_generator_versions()
    committed = OUT_ROOT / PACKAGE_DIR
    if not args.check:
        shutil.rmtree(committed, ignore_errors=True)
        committed.mkdir(parents=True)
        generate(OUT_ROOT)
        print(f"gen_protos: wrote {committed.relative_to(ROOT)}")
        return
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        fresh = Path(tmp) / PACKAGE_DIR
        comparison = filecmp.dircmp(committed, fresh, ignore=["__pycache__"])
        drift = comparison.left_only + comparison.right_only + comparison.diff_files
        if drift:
            sys.exit(
                f"gen_protos: generated code is out of date ({', '.join(sorted(drift))}); run `make proto`"
            )
    print("gen_protos: generated code is up to date")


if __name__ == "__main__":
    main()
