"""Print the README's configuration table from the Settings class (one source of truth).

    .venv/bin/python scripts/config_table.py           # print it
    .venv/bin/python scripts/config_table.py --write   # replace it in README.md

tests/unit/test_config.py fails when README.md's table differs from this output.
"""

from __future__ import annotations

import sys
from pathlib import Path

from hybridcache.server.config import ENV_PREFIX, Settings


def _default(name: str) -> str:
    field = Settings.model_fields[name]
    value = field.get_default(call_default_factory=True)
    if hasattr(value, "get_secret_value"):
        return "(empty)"
    if isinstance(value, list | dict) and not value:
        return "(empty)"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def config_table() -> str:
    rows = ["| Variable | Default | Meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        description = (field.description or "").replace("|", "\\|")
        rows.append(f"| `{ENV_PREFIX}{name.upper()}` | `{_default(name)}` | {description} |")
    return "\n".join(rows)


def replace_block(readme: Path, begin: str, end: str, table: str) -> None:
    """Put `table` between the README's `begin` marker line and its `end` marker (also used by
    scripts/reason_table.py)."""
    text = readme.read_text()
    start = text.index("\n", text.index(begin)) + 1
    stop = text.index(end)
    readme.write_text(text[:start] + table + "\n" + text[stop:])


def write_readme(readme: Path) -> None:
    replace_block(readme, _BEGIN, _END, config_table())


_BEGIN = "<!-- config-table:"
_END = "<!-- /config-table -->"

if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        write_readme(Path(__file__).resolve().parent.parent / "README.md")
    else:
        print(config_table())
