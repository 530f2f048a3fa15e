"""Regenerate the Python code for protos/ into the client package (the one copy of it).

    python scripts/gen_protos.py          # write client/src/hybridcache/v1/*
    python scripts/gen_protos.py --check  # fail if the committed output differs

The generator versions are pinned (root pyproject, extra "dev"): different versions emit
different code, so the check refuses to run with others rather than report a false drift.
"""

from __future__ import annotations

import argparse
import filecmp
import importlib.metadata
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
OUT_ROOT = ROOT / "client" / "src"
PACKAGE_DIR = Path("hybridcache") / "v1"
BIN = Path(sys.executable).parent  # the venv's bin: mypy-protobuf's plugins live there
PINNED = {"grpcio-tools": "1.85.1", "mypy-protobuf": "5.1.0"}


def check_generator_versions() -> None:
    for dist, wanted in PINNED.items():
        found = importlib.metadata.version(dist)
        if found != wanted:
            sys.exit(f"gen_protos: {dist} {found} installed, {wanted} pinned; run `make install`")


def generate(out_root: Path) -> None:
    well_known = Path(protoc.__file__).parent / "_proto"
    sources = sorted(str(p.relative_to(PROTOS)) for p in (PROTOS / PACKAGE_DIR).glob("*.proto"))
    args = [
        "protoc",
        f"-I{PROTOS}",
        f"-I{well_known}",
        f"--python_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"--plugin=protoc-gen-mypy={BIN / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={BIN / 'protoc-gen-mypy_grpc'}",
        f"--mypy_out={out_root}",
        f"--mypy_grpc_out={out_root}",
        *sources,
    ]
    if protoc.main(args) != 0:
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
