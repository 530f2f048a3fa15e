"""Fault scenarios: which variant runs where, and the figures each run prints.

Every scenario test is marked `faults` and parametrised with a `Scale` whose id is `fast`
or `full`; the full variant is also marked `slow` (by `variants`), the soak `soak`:

* `pytest` (CI, default testpaths) runs the FAST variants only (small counts, ~5 s outages):
  the default `-m "not slow and not soak and not scaleout"` (pyproject.toml) leaves the rest out;
* `make test-faults` (`-m "faults and slow"`) runs the FULL variants only (20 runs, 30 s outages);
* `make soak` (`-m soak`) runs the 10-minute soak only.

The others are deselected (not skipped), so each command reports exactly what it ran.
Figures recorded with the `figures` fixture are printed at the end of the session, and
appended as JSON lines to `docs/reliability/figures.jsonl` when HC_FAULTS_RECORD=1.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
RECORD_PATH = REPO / "docs" / "reliability" / "figures.jsonl"


@dataclass(frozen=True)
class Scale:
    """How big one variant of a scenario is. Scenario modules define their own values."""

    name: str  # "fast" | "full"
    runs: int = 1
    outage_s: float = 5.0
    changes: int = 100
    extra: tuple[tuple[str, float], ...] = ()

    def get(self, key: str, default: float) -> float:
        return dict(self.extra).get(key, default)

    def __str__(self) -> str:
        return self.name


def variants(fast: Scale, full: Scale) -> list[Any]:
    """The two parametrisations of a scenario (use as `@pytest.mark.parametrize("scale", ...)`);
    the full one is marked `slow`, so only `make test-faults` runs it."""
    return [pytest.param(fast, id="fast"), pytest.param(full, id="full", marks=pytest.mark.slow)]


class Figures:
    """Numbers a scenario measured, printed (and optionally recorded) at session end."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def record(self, scenario: str, variant: str, **numbers: Any) -> None:
        row = {
            "scenario": scenario,
            "variant": variant,
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            **numbers,
        }
        self.rows.append(row)
        print(f"\nFIGURES {json.dumps(row, sort_keys=True)}")  # visible with -s, and in failures


_FIGURES = Figures()


@pytest.fixture(scope="session")
def figures() -> Iterator[Figures]:
    yield _FIGURES
    if os.environ.get("HC_FAULTS_RECORD") == "1" and _FIGURES.rows:
        RECORD_PATH.parent.mkdir(parents=True, exist_ok=True)
        with RECORD_PATH.open("a") as out:
            for row in _FIGURES.rows:
                out.write(json.dumps(row, sort_keys=True) + "\n")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _FIGURES.rows:
        return
    terminalreporter.section("fault-scenario figures")
    for row in _FIGURES.rows:
        terminalreporter.write_line(json.dumps(row, sort_keys=True))
