"""The fenced blocks of a Markdown file, each with how tests/integration/test_readme.py runs it.

A block's language says what it is; an HTML comment on the line just above its fence says
how to run it when it cannot simply run to completion:

    ```sh / ```python / ```redis    run, in order; must succeed (a redis block: each line
                                    a command to the dev stack's Redis)
    ```text                          not a command (a diagram, an example of output)

    <!-- readme-test: expect="TEXT" -->                  run; its output must contain TEXT
    <!-- readme-test: background ready="TEXT" -->        start, wait for TEXT, go on; it is
                                                         stopped (Ctrl-C) after the last block
                                                         and must then exit 0
    <!-- readme-test: background ready="A" expect="B" -->
                                                         start, wait for A (a stream is
                                                         live), go on; after the NEXT block
                                                         has run its output must show B
                                                         (what that block changed); then it
                                                         is stopped
    <!-- readme-test: scratch-venv -->                   run with a fresh venv first on PATH
                                                         (it installs into the reader's
                                                         environment, not the project's)
    <!-- readme-test: not-run reason="WHY" -->           never run; the test lists every such
                                                         block by name, so none is skipped
                                                         unnoticed

Anything else is an error the test reports with its line: a block with no language, an
unknown language or marker, a marker on a text block, a marker with no block under it.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

SHELL = frozenset({"sh", "bash", "shell"})
LANGUAGES = SHELL | {"python", "redis", "text"}
MODES = frozenset({"run", "background", "scratch-venv", "not-run"})

_FENCE = re.compile(r"^```(?P<lang>[\w+-]*)\s*$")
_MARKER = re.compile(r"^<!--\s*readme-test:(?P<body>.*?)-->\s*$")


class ReadmeError(Exception):
    """The file has a block the runner does not know how to treat (message names the line)."""


@dataclass(frozen=True, slots=True)
class Block:
    line: int  # of the opening fence, 1-based
    language: str
    text: str
    mode: str = "run"
    options: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """Its first command line, to name it in messages."""
        first = next((ln for ln in self.text.splitlines() if ln.strip()), "")
        return f"README.md:{self.line} {first.strip()[:70]!r}"


def read_blocks(path: Path) -> list[Block]:
    lines = path.read_text().splitlines()
    blocks: list[Block] = []
    marker: tuple[int, str, dict[str, str]] | None = None
    index = 0
    while index < len(lines):
        line = lines[index]
        found = _MARKER.match(line)
        if found:
            if marker is not None:
                raise ReadmeError(f"{path.name}:{marker[0]}: a readme-test marker with no block under it")
            marker = (index + 1, *_parse_marker(path, index + 1, found["body"]))
            index += 1
            continue
        fence = _FENCE.match(line)
        if not fence:
            if marker is not None and line.strip():
                raise ReadmeError(f"{path.name}:{marker[0]}: a readme-test marker must be just above a fence")
            index += 1
            continue
        end = next((j for j in range(index + 1, len(lines)) if lines[j].strip() == "```"), None)
        if end is None:
            raise ReadmeError(f"{path.name}:{index + 1}: a fence that is never closed")
        language = fence["lang"]
        if language not in LANGUAGES:
            raise ReadmeError(
                f"{path.name}:{index + 1}: a block of language {language or '(none)'!r}: "
                f"say what it is ({', '.join(sorted(LANGUAGES))}) so the README test knows how to treat it"
            )
        mode, options = ("run", {}) if marker is None else (marker[1], marker[2])
        if language == "text" and marker is not None:
            raise ReadmeError(f"{path.name}:{index + 1}: a text block is not run: it takes no marker")
        blocks.append(Block(index + 1, language, "\n".join(lines[index + 1 : end]) + "\n", mode, options))
        marker = None
        index = end + 1
    if marker is not None:
        raise ReadmeError(f"{path.name}:{marker[0]}: a readme-test marker with no block under it")
    return blocks


def _parse_marker(path: Path, line: int, body: str) -> tuple[str, dict[str, str]]:
    words = shlex.split(body)
    if not words:
        raise ReadmeError(f"{path.name}:{line}: an empty readme-test marker")
    mode = words.pop(0) if words[0] in MODES else "run"
    options = {}
    for word in words:
        key, equals, value = word.partition("=")
        if not equals or key not in {"ready", "expect", "reason"}:
            raise ReadmeError(f"{path.name}:{line}: unknown readme-test option {word!r}")
        options[key] = value
    wanted = {
        "run": ({"expect"}, set()),
        "background": ({"ready", "expect"}, None),
        "scratch-venv": (set(), set()),
        "not-run": ({"reason"}, {"reason"}),
    }[mode]
    allowed, required = wanted
    if not set(options) <= allowed:
        raise ReadmeError(f"{path.name}:{line}: {mode} takes {sorted(allowed) or 'no options'}")
    if required is None and "ready" not in options:
        raise ReadmeError(f"{path.name}:{line}: background needs ready= (what shows it is running)")
    if required and not required <= set(options):
        raise ReadmeError(f"{path.name}:{line}: {mode} needs {sorted(required)}")
    return mode, options
