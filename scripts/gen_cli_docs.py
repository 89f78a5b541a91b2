"""Regenerate docs/cli.md from the CLI itself, so the reference never drifts from the code.

.venv/bin/python scripts/gen_cli_docs.py          # rewrite docs/cli.md
.venv/bin/python scripts/gen_cli_docs.py --check  # exit 1 if docs/cli.md is stale
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from agentmill.cli import app

# ruff: noqa: E501  (the header is Markdown whose table rows are long by nature)
DOC = Path(__file__).resolve().parents[1] / "docs" / "cli.md"

HEADER = """# CLI reference

Generated from the code by `scripts/gen_cli_docs.py`; a test fails when it is stale.

Global option: `agentmill -v COMMAND ...` shows tracebacks on errors.

## Exit codes

| code | meaning |
| --- | --- |
| 0 | done |
| 1 | the run finished but some work items failed (listed in `failures.jsonl`); run the same command again to retry them |
| 2 | bad input: a config, file or argument, a missing API-key variable, an unreachable endpoint, a refused config change; one line on stderr naming the problem and the fix. Also `--strict` / `--max-bad-fraction` when source records are bad |
| 130 | interrupted (Ctrl-C); run the same command again to resume |

A bad RECORD inside a good file (a malformed JSON line, a row with no prompt) is not an
error: it is skipped, written to `failures.jsonl` with its reason, counted, and the run
exits 0, unless `--strict` or `--max-bad-fraction F` is given.
"""


def _param_row(p) -> str:
    names = ", ".join(f"`{o}`" for o in [*p.opts, *p.secondary_opts])
    kind = "argument" if p.param_type_name == "argument" else "option"
    default = (
        "" if p.default in (None, False, [], ()) or p.required else f" (default: `{p.default}`)"
    )
    help_text = (getattr(p, "help", None) or "").replace("|", "\\|")
    return f"| {names} | {kind}{' (required)' if p.required else ''} | {help_text}{default} |"


def _commands(group, prefix: str = "agentmill"):
    """(full name, command) of every command, sub-groups' commands included, in order."""
    for name, cmd in group.commands.items():  # registration order
        if hasattr(cmd, "commands"):  # a sub-group: `agentmill synth tools`, ...
            yield from _commands(cmd, f"{prefix} {name}")
        else:
            yield f"{prefix} {name}", cmd


def render() -> str:
    parts = [HEADER]
    for name, cmd in _commands(typer.main.get_command(app)):
        usage = " ".join(
            p.name.upper() if p.param_type_name == "argument" else "" for p in cmd.params
        ).split()
        parts.append(f"## `{name}`\n\n{(cmd.help or '').strip()}\n")
        parts.append(f"```\n{name} [OPTIONS] {' '.join(usage)}\n```\n")
        parts.append("| name | kind | meaning |\n| --- | --- | --- |")
        parts.extend(_param_row(p) for p in cmd.params if p.name != "help")
        parts.append("")
    return "\n".join(parts).rstrip() + "\n"


def main() -> int:
    text = render()
    if "--check" in sys.argv:
        if not DOC.exists() or DOC.read_text() != text:
            print("docs/cli.md is stale: run .venv/bin/python scripts/gen_cli_docs.py")
            return 1
        return 0
    DOC.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
