"""The service's `hybridcache` command finds `dev` and `bench` in hybridcache-devtools (its
entry points), and without them says to install it instead of failing obscurely."""

from __future__ import annotations

import pytest

from hybridcache.server import cli


def test_dev_and_bench_come_from_the_devtools_entry_points() -> None:
    from importlib.metadata import entry_points

    found = {ep.name: ep.value for ep in entry_points(group=cli.DEV_COMMANDS_GROUP)}
    assert found.get("dev") == "hybridcache_dev.stack.devstack:command", found
    assert found.get("bench") == "hybridcache_dev.bench.runner:main", found


def test_a_command_the_tooling_does_not_provide_says_to_install_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # As if hybridcache-devtools were not installed: the group has no such entry point.
    monkeypatch.setattr(cli, "DEV_COMMANDS_GROUP", "hybridcache.commands-not-installed")
    assert cli.main(["dev", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "install hybridcache-devtools" in err, err


def test_dev_options_reach_the_dev_stack(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["dev", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--wrapper-port" in out, out
    assert "--redis-port" in out, out
