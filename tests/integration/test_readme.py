"""README.md is executed: every shell, Python and Redis block runs, in order, as a reader would
type it, against the dev stack its own `scripts/dev` block starts on the default ports.

How each block is treated is written next to it (tests/readme_blocks.py); a block the runner
does not know how to treat fails the test. Shell blocks share one shell state (an `export`
in one holds in the next, as in a terminal); PATH starts without the project's `.venv/bin`,
so a command that only works with it there works only if the README says to put it there.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import venv
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.devstack_process import WatchedProcess
from tests.readme_blocks import SHELL, Block, ReadmeError, read_blocks

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DEV_REDIS_PORT = 6380  # the dev stack's default, as the README's table says
BLOCK_TIMEOUT_S = 120.0  # a block that installs a package into a fresh venv takes ~10 s here
EXPECT_TIMEOUT_S = 30.0

# The only commands a block marked not-run may start with (its marker gives the reason).
# Adding one is a reviewed change to this list, never a silent skip.
NOT_RUN = {
    "scripts/test",  # the command that runs this test
    "docker",  # needs a Docker engine; `make image-test` builds and runs the image for real
}

pytestmark = pytest.mark.timeout(600)


def test_every_block_is_known_and_only_the_listed_ones_are_not_run() -> None:
    blocks = read_blocks(README)
    assert [b for b in blocks if b.language != "text"], "no runnable block found in README.md"
    not_run = {b.name: b.text.split()[0] for b in blocks if b.mode == "not-run"}
    unexpected = {name: first for name, first in not_run.items() if first not in NOT_RUN}
    assert not unexpected, f"blocks marked not-run that may not be: {unexpected} (allowed: {NOT_RUN})"


@pytest.mark.parametrize(
    ("markdown", "complaint"),
    [
        ("```\nACL LIST\n```\n", "language '(none)'"),
        ("```ruby\nputs 1\n```\n", "language 'ruby'"),
        ("<!-- readme-test: skip -->\n```sh\ntrue\n```\n", "unknown readme-test option 'skip'"),
        ("<!-- readme-test: background -->\n```sh\ntrue\n```\n", "needs ready="),
        ("<!-- readme-test: not-run -->\n```sh\ntrue\n```\n", "needs ['reason']"),
        ("<!-- readme-test: expect=x -->\n```text\ndiagram\n```\n", "takes no marker"),
        ("<!-- readme-test: expect=x -->\nprose\n```sh\ntrue\n```\n", "just above a fence"),
        ("```sh\ntrue\n", "never closed"),
    ],
)
def test_a_block_the_runner_cannot_treat_is_an_error(markdown: str, complaint: str, tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\n{markdown}")
    with pytest.raises(ReadmeError, match=r"README\.md:\d+: ") as caught:
        read_blocks(readme)
    assert complaint in str(caught.value)


class Reader:
    """Runs blocks as a reader would, from the repository's root, keeping the shell's state."""

    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch
        self.state = scratch / "shell-state"
        self.state.write_text("")
        self.env = _readers_environment()
        self.running: list[tuple[Block, WatchedProcess]] = []  # background, till the end
        self.watching: list[tuple[Block, WatchedProcess]] = []  # background expect=: till the next

    def script(self, block: Block, *, extra_path: Path | None = None) -> list[str]:
        if block.language == "python":
            source = self.scratch / f"block-{block.line}.py"
            source.write_text(block.text)
            body = f"python {shlex.quote(str(source))}"  # the `python` on the reader's PATH
        else:
            body = block.text
        prefix = f'export PATH={shlex.quote(str(extra_path))}:"$PATH"\n' if extra_path else ""
        save = f"export -p > {shlex.quote(str(self.state))}\n" if block.language in SHELL else ""
        return [
            "bash",
            "-c",
            f"source {shlex.quote(str(self.state))}\nset -euo pipefail\n{prefix}{body}\n{save}",
        ]

    def run(self, block: Block) -> None:
        if block.language == "redis":
            self._redis(block)
        elif block.mode == "background":
            self._start(block)
            return  # the next block is what a background expect= waits for
        else:
            extra = self._scratch_venv() if block.mode == "scratch-venv" else None
            result = subprocess.run(
                self.script(block, extra_path=extra),
                cwd=ROOT,
                env=self.env,
                capture_output=True,
                text=True,
                timeout=BLOCK_TIMEOUT_S,
                check=False,
            )
            output = result.stdout + result.stderr
            assert result.returncode == 0, f"{block.name} failed (exit {result.returncode}):\n{output}"
            if "expect" in block.options:
                assert block.options["expect"] in output, (
                    f"{block.name}: no {block.options['expect']!r} in its output:\n{output}"
                )
        self._check_watchers()

    def _start(self, block: Block) -> None:
        ready = block.options.get("ready")
        try:
            process = WatchedProcess.start(self.script(block), cwd=ROOT, env=self.env, ready=ready)
        except AssertionError as exc:
            raise AssertionError(
                f"{block.name} did not print {ready!r} (is a default port taken? its one line says):\n{exc}"
            ) from None
        (self.watching if "expect" in block.options else self.running).append((block, process))

    def _check_watchers(self) -> None:
        watching, self.watching = self.watching, []
        for block, process in watching:
            try:
                process.read_until(block.options["expect"], timeout=EXPECT_TIMEOUT_S)
            except AssertionError as exc:
                raise AssertionError(f"{block.name}, left running: {exc}") from None
            finally:
                process.stop()

    def _redis(self, block: Block) -> None:
        with redis.Redis(port=DEV_REDIS_PORT, socket_timeout=5) as client:
            for line in filter(str.strip, block.text.splitlines()):
                try:
                    client.execute_command(*shlex.split(line))
                except redis.RedisError as exc:
                    raise AssertionError(f"{block.name}: {line.split()[:2]} failed: {exc}") from None

    def _scratch_venv(self) -> Path:
        where = self.scratch / "reader-venv"
        venv.create(where, with_pip=True)
        return where / "bin"

    def stop_all(self) -> None:
        """Ctrl-C to what is still running (the dev stack), which must then stop cleanly."""
        running, self.running = self.running, []
        for block, process in reversed(running):
            code = process.stop()
            assert code == 0, f"{block.name} exited {code} after Ctrl-C:\n{process.output[-3000:]}"

    def kill_all(self) -> None:
        for _block, process in [*self.watching, *self.running]:
            process.kill_tree()


@pytest.fixture
def reader(tmp_path: Path) -> Iterator[Reader]:
    reader = Reader(tmp_path)
    yield reader
    reader.kill_all()


@pytest.mark.slow
def test_the_readme_runs_verbatim(reader: Reader) -> None:
    blocks = [b for b in read_blocks(README) if b.language != "text" and b.mode != "not-run"]
    for block in blocks:
        reader.run(block)
    assert not reader.watching, f"{reader.watching[0][0].name} waits for a block that never came"
    reader.stop_all()


def _readers_environment() -> dict[str, str]:
    """This environment as a fresh terminal has it: no HYBRIDCACHE_* settings of ours, no
    `.venv/bin` on PATH, output unbuffered as on a terminal (a stream's lines show at once)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HYBRIDCACHE_", "VIRTUAL_ENV"))}
    path = [p for p in env.get("PATH", "/usr/bin:/bin").split(os.pathsep) if not p.endswith(".venv/bin")]
    env["PATH"] = os.pathsep.join(path)
    env["PYTHONUNBUFFERED"] = "1"
    return env
