"""Print the README's table of error reasons from the one table (`hybridcache.client.reasons`).

    .venv/bin/python scripts/reason_table.py           # print it
    .venv/bin/python scripts/reason_table.py --write   # replace it in README.md

tests/unit/client/test_reasons.py fails when README.md's table differs from this output.
"""

from __future__ import annotations

import sys
from pathlib import Path

from config_table import replace_block  # scripts/ is on sys.path when a script runs

from hybridcache.client.reasons import Reason


def reason_table() -> str:
    rows = ["| Reason | gRPC code | Meaning |", "|---|---|---|"]
    for reason in Reason:
        meaning = reason.meaning.replace("|", "\\|")
        rows.append(f"| `{reason.value}` | {reason.code.name} | {meaning} |")
    return "\n".join(rows)


def write_readme(readme: Path) -> None:
    replace_block(readme, _BEGIN, _END, reason_table())


_BEGIN = "<!-- reason-table:"
_END = "<!-- /reason-table -->"

if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        write_readme(Path(__file__).resolve().parent.parent / "README.md")
    else:
        print(reason_table())
